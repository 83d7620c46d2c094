"""A hostile or unlucky user of `wspace run`, `--resume`, `predict` and `compare` (issue #11):
a checkpoint is data, never instructions; what cannot be continued is refused before any work;
a full disk or a read-only folder is a message; Ctrl-C says what really was saved; a diverged
pretraining stops with what to change. Every refusal: exit code 1, one message, no traceback,
nothing existing damaged."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from wspace.cli import cli
from wspace.reporting.roles import baseline_encoder
from wspace_core.registry import WspaceError

ZOO_MODELS = 12
#: printed once work has started: a refusal before work prints none of these
WORK = ("reusing zoo", "building zoo", "training the no-information baseline", "by emulation (",
        "from its last checkpoint (")


def wspace(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result, *patterns: str) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.output[result.output.index("Error: "):].strip()
    assert "\n\n" not in message
    for pattern in patterns:
        assert pattern in message, message
    return message


def checksums(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """One finished smoke run (its out dir, run directory and zoo)."""
    out = tmp_path_factory.mktemp("reliability") / "out"
    result = wspace("run", "--preset", "smoke", "--zoo-models", ZOO_MODELS, "--encoder", "layerwise_statistics",
                    "--out-dir", out, "--no-tracking")
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "runs").iterdir()
    (zoo,) = (out / "zoos").iterdir()
    return {"out": out, "run_dir": run_dir, "zoo": zoo}


def interrupted_copy(finished: dict, name: str) -> Path:
    """A copy of the finished run as it is when killed after its last checkpoint (no results)."""
    copy = finished["out"] / "runs" / name
    shutil.copytree(finished["run_dir"], copy)
    for done in ("results.json", "encoder.pt"):
        (copy / done).unlink()
    return copy


def edit_encoder_config(path: Path, **changes) -> None:
    state = torch.load(path, weights_only=True)
    config = json.loads(state["config"])
    for key, value in changes.items():
        if key == "zoo":
            config["zoo"] = {**config["zoo"], **value}
        else:
            config[key] = value
    state["config"] = json.dumps(config)
    torch.save(state, path)


# ---- item 2: predict trusts no configuration stored in encoder.pt ---------------------------------

def test_predict_does_not_build_where_the_checkpoint_says(finished, tmp_path, monkeypatch):
    """An edited out_dir and zoo size in encoder.pt, predict run from another directory: the
    run's own zoo is found by fingerprint; nothing is built anywhere."""
    run_dir = finished["out"] / "runs" / "edited"
    shutil.copytree(finished["run_dir"], run_dir)
    elsewhere = tmp_path / "elsewhere"
    edit_encoder_config(run_dir / "encoder.pt", out_dir=str(elsewhere), zoo={"num_models": 10**6})
    monkeypatch.chdir(tmp_path)
    zoos_before = sorted(p.name for p in (finished["out"] / "zoos").iterdir())
    result = wspace("predict", "--run", run_dir, "--json")
    assert result.exit_code == 0, result.output
    assert f"using zoo {finished['zoo']}" in result.output
    assert not elsewhere.exists() and not (tmp_path / "wspace_runs").exists()
    assert sorted(p.name for p in (finished["out"] / "zoos").iterdir()) == zoos_before


def test_predict_refuses_when_the_zoo_is_not_found(finished, tmp_path, monkeypatch):
    """A checkpoint away from its run directory, pointing at a folder without the zoo: refused,
    nothing built there; told where the zoo is with --zoo it works."""
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(finished["run_dir"] / "encoder.pt", loose / "encoder.pt")
    elsewhere = tmp_path / "elsewhere"
    edit_encoder_config(loose / "encoder.pt", out_dir=str(elsewhere))
    monkeypatch.chdir(tmp_path)
    refused(wspace("predict", "--run", loose), "that is not in", "pass that zoo with --zoo PATH", "never builds a zoo")
    assert not elsewhere.exists() and sorted(os.listdir(tmp_path)) == ["loose"]
    result = wspace("predict", "--run", loose, "--zoo", finished["zoo"], "--json")
    assert result.exit_code == 0, result.output


def test_predict_refuses_a_zoo_with_another_fingerprint(finished, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    state = torch.load(finished["run_dir"] / "encoder.pt", weights_only=True)
    state["zoo_fingerprint"] = "0" * 16
    torch.save(state, loose / "encoder.pt")
    refused(wspace("predict", "--run", loose, "--zoo", finished["zoo"]), "was trained on the zoo with fingerprint "
                                                                         "0000000000000000")


# ---- item 10: --resume with a checkpoint it cannot continue from --------------------------------

def test_resume_refuses_a_checkpoint_of_another_encoder(finished):
    run_dir = interrupted_copy(finished, "other-encoder")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "encoder": "flattened_weights"}))
    before = checksums(run_dir)
    result = wspace("run", "--resume", run_dir, "--no-tracking")
    refused(result, "the stored encoder weights do not fit this run's encoder", "delete", "start a new run")
    assert not any(w in result.output for w in WORK)
    assert checksums(run_dir) == before


@pytest.mark.parametrize("drop", ["optimizer", "best_state", "stale_evals"])
def test_resume_refuses_an_older_or_partial_checkpoint(finished, drop):
    run_dir = interrupted_copy(finished, f"partial-{drop}")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state[drop]
    torch.save(state, run_dir / "checkpoint.pt")
    result = wspace("run", "--resume", run_dir, "--no-tracking")
    refused(result, "is not a wspace pretraining checkpoint", f"it lacks {drop}")
    assert not any(w in result.output for w in WORK)


def test_resume_refuses_a_checkpoint_of_other_sizes(finished):
    run_dir = interrupted_copy(finished, "other-sizes")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "encoder": {**config["encoder"], "z_dim": 7}}))
    result = wspace("run", "--resume", run_dir, "--no-tracking")
    refused(result, "do not fit this run's")
    assert not any(w in result.output for w in WORK)


def test_resume_continues_a_good_checkpoint(finished):
    """The checks let a sound interrupted run through (the fix refuses only what is wrong)."""
    run_dir = interrupted_copy(finished, "sound")
    result = wspace("run", "--resume", run_dir, "--no-tracking")
    assert result.exit_code == 0, result.output
    assert (run_dir / "results.json").exists()


# ---- item 8: a full disk, a read-only folder --------------------------------------------------------

@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_at_checkpoint_write_keeps_the_previous_checkpoint(finished):
    run_dir = interrupted_copy(finished, "disk-full")
    before = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.tmp").symlink_to("/dev/full")  # every write there: ENOSPC
    result = wspace("run", "--resume", run_dir, "--no-tracking")
    refused(result, f"cannot write the checkpoint {run_dir / 'checkpoint.pt'}",
            f"the previous checkpoint {run_dir / 'checkpoint.pt'} is intact", "Free disk space")
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_disk_full_anywhere_else_is_a_message(finished, tmp_path, monkeypatch):
    """An OSError of a full disk met mid-work (here: writing config.json of a new run)."""
    import wspace.experiment.context as context_module

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(context_module, "write_json_atomic", full)
    result = wspace("run", "--preset", "smoke", "--zoo-models", ZOO_MODELS, "--encoder", "layerwise_statistics",
                    "--out-dir", finished["out"], "--no-tracking")
    refused(result, "config.json: No space left on device", "free some space")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write in (chmod; as root, an immutable folder)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):  # root ignores permissions
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a folder read-only for this user")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)])
    folder.chmod(0o755)


def test_read_only_out_dir_and_report_dir(finished, read_only_dir):
    result = wspace("run", "--preset", "smoke", "--encoder", "layerwise_statistics", "--out-dir",
                    read_only_dir / "out", "--no-tracking")
    refused(result, f"cannot write in --out-dir {read_only_dir / 'out'}", "pass a folder you can write to")
    result = wspace("compare", "--preset", "smoke", "--zoo-models", ZOO_MODELS, "--encoders", "layerwise_statistics",
                    "--out-dir", finished["out"], "--out", read_only_dir / "report", "--no-tracking")
    refused(result, f"cannot write in --out {read_only_dir / 'report'}")
    assert not any(w in result.output for w in WORK)
    assert os.listdir(read_only_dir) == []


# ---- item 12: Ctrl-C during the baseline, a diverged pretraining -----------------------------------

def test_ctrl_c_during_the_baseline_promises_no_checkpoint(finished, monkeypatch):
    import wspace.experiment.baseline as baseline_module

    real = baseline_module.pretrain

    def interrupted(zoo, encoder_name, *args, **kwargs):
        if encoder_name == baseline_encoder():
            raise KeyboardInterrupt
        return real(zoo, encoder_name, *args, **kwargs)

    monkeypatch.setattr(baseline_module, "pretrain", interrupted)
    result = wspace("run", "--preset", "smoke", "--zoo-models", ZOO_MODELS, "--encoder", "layerwise_statistics",
                    "--baseline", "before",  # in this process, where the patch reaches
                    "--seed", "11", "--out-dir", finished["out"], "--no-tracking")  # a seed whose baseline is new
    assert result.exit_code == 130, result.output
    assert "interrupted before the first pretraining checkpoint (nothing of the pretraining is saved yet)" \
        in result.output
    assert "its last pretraining checkpoint" not in result.output
    (run_dir,) = [d for d in (finished["out"] / "runs").iterdir() if f"--resume {d}`" in result.output]
    assert not (run_dir / "checkpoint.pt").exists()


def test_nan_loss_stops_with_what_to_change(finished):
    result = wspace("run", "--preset", "smoke", "--zoo-models", ZOO_MODELS, "--encoder", "layerwise_statistics",
                    "--lr", "1e30", "--seed", "12", "--out-dir", finished["out"], "--no-tracking")
    refused(result, "pretraining diverged: the emulation loss is nan at step", "learning rate 1e+30",
            "lower --lr")


def test_nan_loss_is_recorded_on_the_mlflow_run(finished, tmp_path, monkeypatch):
    """The encoder's pretraining diverges (the baseline did not): the MLflow run is FAILED and
    carries the message."""
    pytest.importorskip("mlflow")
    import wspace.experiment.run as run_module
    from mlflow.tracking import MlflowClient

    real = run_module.pretrain

    def diverging(zoo, encoder_name, config, **kwargs):
        if encoder_name != baseline_encoder():
            import attrs

            config = attrs.evolve(config, lr=1e30)
        return real(zoo, encoder_name, config, **kwargs)

    monkeypatch.setattr(run_module, "pretrain", diverging)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = wspace("run", "--preset", "smoke", "--zoo-models", ZOO_MODELS, "--encoder", "layerwise_statistics",
                    "--seed", "13", "--out-dir", finished["out"], "--tracking-uri", uri)
    refused(result, "pretraining diverged")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("wspace").experiment_id])
    assert run.info.status == "FAILED"
    assert "pretraining diverged" in run.data.tags["wspace.error"]


def test_library_pretrain_raises_on_nan(finished):
    from wspace.config import PretrainConfig
    from wspace.presets import PRETRAIN_PRESETS
    from wspace.training.pretrain import pretrain
    from wspace.zoo import Zoo

    config = PretrainConfig(**{**PRETRAIN_PRESETS["smoke"], "lr": 1e30})
    with pytest.raises(WspaceError, match="pretraining diverged"):
        pretrain(Zoo.open(finished["zoo"]), "layerwise_statistics", config, preset="smoke")


def test_resume_of_a_run_started_with_a_bad_seed_is_refused(finished):
    """A run directory written before seeds were checked (seed -1) no longer crashes on every
    --resume after the baseline: its configuration is refused first."""
    run_dir = interrupted_copy(finished, "bad-seed")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "seed": -1}))
    result = wspace("run", "--resume", run_dir, "--no-tracking")
    refused(result, "config.json: seed must be an integer from 0 to 4294967295, got -1")
    assert not any(w in result.output for w in WORK)
