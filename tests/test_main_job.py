"""No drift between the README's main job and the code: the README's command resolves to the
configuration of the measured run committed in reports/main_job/, and the figures the README
quotes are that run's."""

import json
import shlex
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from wspace.cli import cli
from wspace.config import config_from_dict
from wspace.experiment.summary import emulation_sentence
from wspace.experiment.zoos import zoo_config_for
from wspace.training.pretrain import build_encoder, context_for
from wspace.zoo.build import architecture_for, task_for

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "reports" / "main_job"
#: where the measured run happened to write: paths of that machine, not settings of the job
MACHINE_FIELDS = ("tracking_uri",)


def _readme_main_command() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if "pip install -e . && wspace run" in ln]
    return shlex.split(line.split("&& wspace ", 1)[1])


class _Stop(Exception):
    pass


def _config_of(args: list[str], monkeypatch) -> dict:
    """The RunConfig `wspace ARGS` hands to the pipeline (the pipeline itself is not run)."""
    captured = {}

    def capture(config, **_):
        captured["config"] = config
        raise _Stop

    monkeypatch.setattr("wspace.experiment.run.run", capture)
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, _Stop), result.output
    return json.loads(json.dumps(attrs.asdict(captured["config"])))  # as config.json stores it


def _without_machine_fields(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in MACHINE_FIELDS}


def _measured_config() -> dict:
    """The measured run's config.json as today's wspace reads it (as `--resume` would): a file
    written in an earlier layout (before the encoder section was typed) gives the same object."""
    stored = json.loads((MEASURED / "config.json").read_text())
    config = attrs.asdict(config_from_dict(stored, "reports/main_job/config.json"))
    return json.loads(json.dumps(config))


def test_the_readme_command_is_the_measured_configuration(monkeypatch):
    measured = _measured_config()
    assert _without_machine_fields(_config_of(_readme_main_command(), monkeypatch)) == \
        _without_machine_fields(measured)


def test_the_readme_command_builds_the_measured_encoder(monkeypatch):
    """The encoder's own preset (sizes, probing length, what it reads of an answer) is not in the
    run configuration; the measured run recorded it (``Encoder.settings``)."""
    config = config_from_dict(_config_of(_readme_main_command(), monkeypatch), "the README command")
    zoo = zoo_config_for(config)
    task = task_for(zoo)
    context = context_for(architecture_for(zoo, task), task, config.encoder.z_dim, config.preset,
                          config.encoder.options)
    measured = json.loads((MEASURED / "results.json").read_text())["encoder_result"]["encoder_settings"]
    assert build_encoder(config.encoder.name, context).settings() == measured


def test_a_changed_default_would_be_caught(monkeypatch):
    measured = _measured_config()
    changed = _config_of(_readme_main_command() + ["--pretrain-steps", "7"], monkeypatch)
    assert _without_machine_fields(changed) != _without_machine_fields(measured)


def test_the_readme_quotes_the_measured_run():
    results = json.loads((MEASURED / "results.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert emulation_sentence(results) in readme
    console = (MEASURED / "console.txt").read_text()
    assert emulation_sentence(results) in console


# ---- the committed comparison (issue #13's second target) ----------------------------------------

COMPARISON = ROOT / "reports" / "compare_quick"
#: where the measured comparison wrote: paths of that machine, not settings of the comparison
COMPARE_MACHINE_FIELDS = ("out_dir", "tracking_uri")


def _compare_config_of(args: list[str], monkeypatch):
    """The CompareConfig `wspace compare ARGS` hands to the comparison (which is not run)."""
    import wspace.experiment.compare as compare_module

    captured = {}

    def capture(config, **_):
        captured["config"] = config
        raise _Stop

    monkeypatch.setattr(compare_module, "compare", capture)
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, _Stop), result.output
    return captured["config"]


def test_the_committed_comparison_is_todays_quick_comparison(monkeypatch):
    """reports/compare_quick ran `wspace compare --encoders all --seeds 3` (its --out, --out-dir and
    --tracking-uri aside): today's code resolves that command to the same run settings, encoders
    and seeds, so the README's comparison figures belong to the default comparison."""
    stored = json.loads((COMPARISON / "results.json").read_text())
    config = _compare_config_of(["compare", "--encoders", "all", "--seeds", "3"], monkeypatch)
    today = json.loads(json.dumps(attrs.asdict(config)))
    strip = lambda run: {k: v for k, v in run.items() if k not in COMPARE_MACHINE_FIELDS}  # noqa: E731
    assert strip(today["run"]) == strip(stored["config"]["run"])
    assert (today["encoders"], today["seeds"], today["skip_supervised"]) == (
        stored["config"]["encoders"], stored["config"]["seeds"], stored["config"]["skip_supervised"])
    readme = (ROOT / "README.md").read_text()
    assert "reports/compare_quick/report.md" in readme
