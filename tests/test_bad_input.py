"""Bad input through the command line: unknown plugins, impossible sizes, broken configuration
files, NaN weights, empty splits, an unreachable tracking store, damaged or newer zoos, a zoo of
another architecture. Each must give a clear one-paragraph error, a non-zero exit code, no
traceback, and leave every existing zoo byte for byte as it was."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wspace_core import plugins
from wspace.cli import cli
from wspace.config import resolve
from wspace_core.registry import WspaceError
from wspace.experiment.zoos import ensure_zoo, zoo_path_for
from wspace.zoo import Zoo
from wspace.zoo.files import sha256_file
from wspace.zoo.manifest import MANIFEST_NAME, fingerprint

#: every `wspace run` case points at the shared workspace, whose zoo it would reuse
ZOO_MODELS = 12


def run_args(*extra: str) -> list[str]:
    return ["run", "--preset", "smoke", "--zoo-models", str(ZOO_MODELS), "--out-dir", "{out}",
            "--encoder", "layerwise_statistics", "--no-tracking", *extra]


def compare_args(*extra: str) -> list[str]:
    return ["compare", "--preset", "smoke", "--zoo-models", str(ZOO_MODELS), "--out-dir", "{out}",
            "--encoders", "layerwise_statistics", "--skip-supervised", "--no-tracking", "--out", "{tmp}/report", *extra]


#: what `wspace run` / `compare` print once work has started: a refusal must come before all of it
BEFORE_WORK = ("reusing zoo", "building zoo", "training the no-information baseline", "by emulation (")


def build_args(*extra: str) -> list[str]:
    return ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--out", "{tmp}/new-zoo", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_checksums(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """An out dir holding the zoo every `wspace run` case would reuse (built once)."""
    out = tmp_path_factory.mktemp("workspace") / "out"
    config = resolve(preset="smoke", zoo={"num_models": ZOO_MODELS}, out_dir=str(out),
                     encoder="layerwise_statistics")
    torch.manual_seed(0)
    zoo = ensure_zoo(config, echo=lambda m: None)
    return {"out": out, "zoo": Path(zoo.path), "config": config, "checksums": tree_checksums(Path(zoo.path))}


# ---- set-ups: each prepares files and returns placeholders for the arguments ----------------------

def toml(text: str) -> Callable[[Path, dict], dict]:
    def setup(tmp: Path, ws: dict) -> dict:
        (tmp / "run.toml").write_text(text)
        return {"config": str(tmp / "run.toml")}
    return setup


def zoo_copy(damage: Callable[[Path], None], at_run_path: bool = False) -> Callable[[Path, dict], dict]:
    """A damaged copy of the workspace zoo (at the path `wspace run` would reuse it from, in a fresh
    out dir, when ``at_run_path``)."""
    def setup(tmp: Path, ws: dict) -> dict:
        if at_run_path:
            config = attrs.evolve(ws["config"], out_dir=str(tmp / "out2"))
            copy = zoo_path_for(config)
        else:
            copy = tmp / "damaged"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ws["zoo"], copy)
        damage(copy)
        return {"damaged": str(copy), "out2": str(tmp / "out2"), "guard": copy}
    return setup


def truncate(name: str, keep: int | None = None) -> Callable[[Path], None]:
    def damage(zoo: Path) -> None:
        data = (zoo / name).read_bytes()
        (zoo / name).write_bytes(data[:keep] if keep is not None else data[:-64])
    return damage


def flip(name: str, offset: int) -> Callable[[Path], None]:
    def damage(zoo: Path) -> None:
        data = bytearray((zoo / name).read_bytes())
        data[offset] ^= 0x40
        (zoo / name).write_bytes(bytes(data))
    return damage


def manifest_edit(edit, refingerprint: bool = False) -> Callable[[Path], None]:
    def damage(zoo: Path) -> None:
        manifest = json.loads((zoo / MANIFEST_NAME).read_text())
        edit(manifest)
        if refingerprint:
            manifest["fingerprint"] = fingerprint(manifest)
        (zoo / MANIFEST_NAME).write_text(json.dumps(manifest))
    return damage


def empty_dir(tmp: Path, ws: dict) -> dict:
    (tmp / "empty").mkdir()
    return {"empty": str(tmp / "empty")}


def a_file(tmp: Path, ws: dict) -> dict:
    (tmp / "afile").write_text("not a directory")
    return {"afile": str(tmp / "afile")}


def published(damage: Callable[[dict, Path], None]) -> Callable[[Path, dict], dict]:
    """A small fake published zoo of the paper (see test_zoo_import), then damaged."""
    def setup(tmp: Path, ws: dict) -> dict:
        from test_zoo_import import make_formal_languages

        src = make_formal_languages(tmp / "published")
        damage(src, tmp / "published")
        return {"src": str(tmp / "published"), "guard": tmp / "published"}
    return setup


def nan_weights(src: dict, folder: Path) -> None:
    weights = src["parameters.npy"].copy()
    weights[4, 7] = np.nan
    np.save(folder / "parameters.npy", weights)


def inf_weights(src: dict, folder: Path) -> None:
    weights = src["parameters.npy"].copy()
    weights[2, 0] = -np.inf
    np.save(folder / "parameters.npy", weights)


def nan_logits(src: dict, folder: Path) -> None:
    logits = src["logits.npy"].copy()
    logits[3, 0, 2, 1] = np.nan
    np.save(folder / "logits.npy", logits)


def published_and_existing(tmp: Path, ws: dict) -> dict:
    from test_zoo_import import make_formal_languages

    make_formal_languages(tmp / "published")
    return {"src": str(tmp / "published")}


def lstm_zoo_at_gru_path(tmp: Path, ws: dict) -> dict:
    config = attrs.evolve(ws["config"], arch="gru", out_dir=str(tmp / "out2"))
    path = zoo_path_for(config)
    path.parent.mkdir(parents=True)
    shutil.copytree(ws["zoo"], path)
    return {"out2": str(tmp / "out2"), "guard": path}


def no_gpu() -> bool:
    return not torch.cuda.is_available()


@attrs.frozen
class Case:
    id: str
    args: list[str]
    patterns: tuple[str, ...]
    setup: Callable[[Path, dict], dict] | None = None
    skip: Callable[[], str | None] | None = None
    absent: tuple[str, ...] = ()  # work that must not have started before the refusal


def _skip_without_gru() -> str | None:
    return None if "gru" in plugins.architectures().names() else "the gru example plugin is not installed"


def _skip_with_gpu() -> str | None:
    return None if no_gpu() else "this machine has a GPU"


CASES = [
    # unknown plugin names
    Case("run-unknown-arch", run_args("--arch", "nope"), ("unknown architecture 'nope'", "lstm")),
    Case("run-unknown-task", run_args("--task", "nope"), ("unknown task family 'nope'", "formal_languages")),
    Case("run-unknown-encoder", run_args("--encoder", "nope"), ("unknown encoder 'nope'", "dwsnet")),
    Case("run-unknown-objective", run_args("--objective", "nope"), ("unknown objective 'nope'", "reverse_kl")),
    Case("run-unknown-probing-strategy", run_args("--encoder", "interactive_probing", "--probing-strategy", "nope"),
         ("unknown probing strategy 'nope'", "static"), absent=("reusing zoo",)),
    Case("build-unknown-arch", build_args("--arch", "nope"), ("unknown architecture 'nope'",)),
    Case("build-unknown-task", ["zoo", "build", "--task", "nope", "--out", "{tmp}/z"], ("unknown task family 'nope'",)),
    Case("unknown-preset", run_args("--preset", "huge"), ("'huge' is not one of",)),
    Case("list-unknown-kind", ["list", "widgets"], ("'widgets' is not one of",)),
    # impossible sizes
    Case("run-zoo-models-0", run_args("--zoo-models", "0"), ("num_models must be a positive integer, got 0",)),
    Case("run-zoo-models-negative", run_args("--zoo-models", "-4"), ("num_models must be a positive integer",)),
    Case("run-pretrain-steps-negative", run_args("--pretrain-steps", "-5"), ("steps must be a positive integer, got -5",)),
    Case("run-pretrain-steps-0", run_args("--pretrain-steps", "0"), ("steps must be a positive integer, got 0",)),
    Case("run-zoo-steps-negative", run_args("--zoo-steps", "-1"), ("steps must be a positive integer, got -1",)),
    Case("run-z-dim-0", run_args("--z-dim", "0"), ("z_dim must be a positive integer",)),
    Case("run-batch-size-0", run_args("--batch-size", "0"), ("batch_size must be a positive integer",)),
    Case("run-lr-nan", run_args("--lr", "nan"), ("lr must be a positive (finite) number, got nan",)),
    Case("run-lr-inf", run_args("--lr", "inf"), ("lr must be a positive (finite) number, got inf",)),
    Case("run-lr-negative", run_args("--lr", "-0.1"), ("lr must be a positive",)),
    Case("build-num-models-0", build_args("--num-models", "0"), ("num_models must be a positive integer",)),
    Case("build-chunk-size-0", build_args("--chunk-size", "0"), ("chunk_size must be a positive integer",)),
    Case("build-steps-negative", build_args("--steps", "-3"), ("steps must be a positive integer",)),
    Case("build-chunk-bigger-than-zoo", build_args("--num-models", "3", "--chunk-size", "4"), ("chunk_size",)),
    Case("build-unknown-task-setting", build_args("--task-setting", "bogus=1"),
         ("unknown formal_languages setting(s) bogus", "num_eval_strings")),
    Case("build-task-setting-without-value", build_args("--task-setting", "bogus"), ("KEY=VALUE",)),
    Case("build-not-an-int", build_args("--num-models", "many"), ("'many' is not a valid integer",)),
    # configuration files
    Case("toml-hidden-size-0", run_args("--config", "{config}"),
         ("hidden_size must be a positive integer, got 0",), toml("[zoo]\nhidden_size = 0\n")),
    Case("toml-num-layers-negative", run_args("--config", "{config}"),
         ("num_layers must be a positive integer",), toml("[zoo]\nnum_layers = -1\n")),
    Case("toml-num-rollouts-0", run_args("--config", "{config}"),
         ("num_rollouts must be a positive integer",), toml("[zoo]\nnum_rollouts = 0\n")),
    Case("toml-zoo-unknown-key", run_args("--config", "{config}"),
         ("unknown zoo setting(s) hiden_size",), toml("[zoo]\nhiden_size = 8\n")),
    Case("toml-split-fractions-length", run_args("--config", "{config}"),
         ("split_fractions must be three",), toml("[zoo]\nsplit_fractions = [0.5, 0.5]\n")),
    Case("toml-split-fractions-negative", run_args("--config", "{config}"),
         ("split_fractions must be three non-negative",), toml("[zoo]\nsplit_fractions = [1.2, -0.1, -0.1]\n")),
    Case("toml-snapshot-fractions-unordered", run_args("--config", "{config}"),
         ('snapshot_fractions must be "paper" or increasing fractions of training in [0, 1]',),
         toml("[zoo]\nsnapshot_fractions = [0, 0.5, 0.25]\n")),
    Case("toml-lr-fractions-not-pairs", run_args("--config", "{config}"),
         ('lr_fractions must be "paper" or [fraction of training, learning rate] pairs',),
         toml("[zoo]\nlr_fractions = [0.01, 0.001]\n")),
    Case("toml-lr-fractions-beyond-training", run_args("--config", "{config}"),
         ('lr_fractions must be "paper" or [fraction of training, learning rate] pairs',),
         toml("[zoo]\nlr_fractions = [[0, 0.01], [1.5, 0.001]]\n")),
    Case("toml-unknown-top-key", run_args("--config", "{config}"),
         ("unknown key(s) 'encodr'", "valid keys"), toml("encodr = 'dwsnet'\n")),
    Case("toml-unknown-pretrain-key", run_args("--config", "{config}"),
         ("unknown key(s) 'step'", "[pretrain]"), toml("[pretrain]\nstep = 3\n")),
    Case("toml-seed-wrong-type", run_args("--config", "{config}"), ("'seed' must be of type int",), toml("seed = 'zero'\n")),
    Case("toml-z-dim-float", run_args("--config", "{config}"), ("z_dim must be a positive integer",),
         toml("[encoder]\nz_dim = 1.5\n")),
    Case("toml-z-dim-top-level", run_args("--config", "{config}"), ("'z_dim' is an encoder setting", "[encoder] z_dim"),
         toml("z_dim = 8\n")),
    Case("toml-pretrain-steps-string", run_args("--config", "{config}"),
         ("steps must be a positive integer, got 'many'",), toml("[pretrain]\nsteps = 'many'\n")),
    Case("toml-pretrain-lr-inf", run_args("--config", "{config}"),
         ("lr must be a positive (finite) number, got inf",), toml("[pretrain]\nlr = inf\n")),
    Case("toml-selection-metric-unknown", run_args("--config", "{config}"),
         ("selection_metric 'accuracy'", "published_total_variation"), toml("[pretrain]\nselection_metric = 'accuracy'\n")),
    Case("toml-zoo-not-a-table", run_args("--config", "{config}"), ("'zoo' must be a table",), toml("zoo = 3\n")),
    Case("toml-not-toml", run_args("--config", "{config}"), ("is not valid TOML",), toml("seed = = 1\n")),
    Case("toml-missing-file", run_args("--config", "{tmp}/missing.toml"), ("does not exist",)),
    # devices, key=value options
    Case("run-device-unknown", run_args("--device", "abacus"), ("unknown device 'abacus'",)),
    Case("build-device-unknown", build_args("--device", "abacus"), ("unknown device 'abacus'",)),
    Case("run-device-cuda-without-gpu", run_args("--device", "cuda"), ("torch sees no GPU", "--device cpu"),
         skip=_skip_with_gpu),
    Case("build-device-cuda-without-gpu", build_args("--device", "cuda:3"), ("torch sees no GPU",), skip=_skip_with_gpu),
    Case("encoder-option-without-value", run_args("--encoder-option", "hidden"), ("takes KEY=VALUE",)),
    Case("encoder-option-unknown", run_args("--encoder-option", "bogus=1"),
         ("unknown option(s) 'bogus' for encoder 'layerwise_statistics'",),
         absent=("training the no-information baseline",)),
    Case("task-setting-unknown", run_args("--task-setting", "bogus=1"),
         ("unknown formal_languages setting(s) bogus",)),
    # empty zoos and empty splits
    Case("run-validation-split-empty", run_args("--zoo-models", "2"), ("no networks in its 'validation' split",)),
    Case("toml-only-training-split", run_args("--config", "{config}", "--zoo-models", "4"),
         ("no networks in its 'validation' split",), toml("[zoo]\nsplit_fractions = [1.0, 0.0, 0.0]\n")),
    Case("info-empty-directory", ["zoo", "info", "{empty}"], ("is not a wspace zoo",), empty_dir),
    Case("verify-missing-directory", ["zoo", "verify", "{tmp}/nowhere"], ("no zoo at",)),
    Case("verify-zoo-of-no-models", ["zoo", "verify", "{damaged}"], ("num_models must be a positive integer",),
         zoo_copy(manifest_edit(lambda m: m.update(num_models=0), refingerprint=True))),
    # tracking
    Case("run-tracking-unreachable", [a for a in run_args() if a != "--no-tracking"]
         + ["--tracking-uri", "http://127.0.0.1:{port}"], ("cannot reach the MLflow tracking store", "--no-tracking")),
    Case("run-tracking-unusable-sqlite", [a for a in run_args() if a != "--no-tracking"]
         + ["--tracking-uri", "sqlite:///{afile}/mlflow.db"], ("cannot reach the MLflow tracking store",), a_file),
    # damaged, newer and foreign zoos
    Case("verify-truncated-weights", ["zoo", "verify", "{damaged}"], ("weights.npy", "truncated"),
         zoo_copy(truncate("weights.npy"))),
    Case("verify-truncated-header", ["zoo", "verify", "{damaged}"], ("weights.npy is not a readable .npy file",),
         zoo_copy(truncate("weights.npy", keep=40))),
    Case("info-truncated-metadata", ["zoo", "info", "{damaged}"], ("metadata.npy", "truncated"),
         zoo_copy(truncate("metadata.npy"))),
    Case("info-damaged-magic", ["zoo", "info", "{damaged}"], ("metadata.npy is not a readable .npy file",),
         zoo_copy(flip("metadata.npy", 3))),
    Case("verify-bit-flip", ["zoo", "verify", "{damaged}"], ("weights.npy does not match the checksum",),
         zoo_copy(flip("weights.npy", -5))),
    Case("run-reuses-bit-flipped-zoo", [a.replace("{out}", "{out2}") for a in run_args()],
         ("does not match the checksum",), zoo_copy(flip("rollout_outputs.npy", -3), at_run_path=True)),
    Case("verify-newer-format", ["zoo", "verify", "{damaged}"], ("format version 2", "upgrade wspace"),
         zoo_copy(manifest_edit(lambda m: m.update(format_version=2)))),
    Case("info-newer-format", ["zoo", "info", "{damaged}"], ("format version 7",),
         zoo_copy(manifest_edit(lambda m: m.update(format_version=7)))),
    Case("run-reuses-newer-format-zoo", [a.replace("{out}", "{out2}") for a in run_args()],
         ("newer than the version",), zoo_copy(manifest_edit(lambda m: m.update(format_version=3)), at_run_path=True)),
    Case("info-manifest-not-json", ["zoo", "info", "{damaged}"], ("is not valid JSON",),
         zoo_copy(lambda z: (z / MANIFEST_NAME).write_text('{"format": "wspace-zoo", '))),
    Case("verify-manifest-without-metadata", ["zoo", "verify", "{damaged}"], ("lists no metadata",),
         zoo_copy(manifest_edit(lambda m: m["arrays"].pop("metadata")))),
    Case("info-manifest-edited", ["zoo", "info", "{damaged}"], ("fingerprint does not match",),
         zoo_copy(manifest_edit(lambda m: m["build"].update(seed=99)))),
    Case("run-arch-gru-on-lstm-zoo", [a.replace("{out}", "{out2}") for a in run_args("--arch", "gru")],
         ("holds 'lstm' networks, but 'gru' was expected",), lstm_zoo_at_gru_path, skip=_skip_without_gru),
    # published zoos of the paper
    Case("import-nan-weights", ["zoo", "import-paper", "{src}", "{tmp}/imported", "--task", "formal_languages"],
         ("NaN or infinite weights at rows 4",), published(nan_weights)),
    Case("import-inf-weights", ["zoo", "import-paper", "{src}", "{tmp}/imported", "--task", "formal_languages"],
         ("NaN or infinite weights at rows 2",), published(inf_weights)),
    Case("import-nan-logits", ["zoo", "import-paper", "{src}", "{tmp}/imported", "--task", "formal_languages"],
         ("logits.npy",), published(nan_logits)),
    Case("import-into-existing-zoo", ["zoo", "import-paper", "{src}", "{zoo}", "--task", "formal_languages"],
         ("{zoo}",), published_and_existing),
    # writing over what exists
    Case("build-over-existing-zoo", ["zoo", "build", "--task", "formal_languages", "--preset", "smoke",
                                     "--out", "{zoo}", "--num-models", "3", "--chunk-size", "3"],
         ("built with different settings",)),
    Case("build-over-existing-zoo-resume", ["zoo", "build", "--task", "formal_languages", "--preset", "smoke",
                                            "--out", "{zoo}", "--seed", "5", "--resume"],
         ("built with different settings",)),
    Case("build-into-a-file", ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--out", "{afile}"],
         ("is a file",), a_file),
    Case("merge-into-existing-zoo", ["zoo", "merge", "{damaged}", "--out", "{zoo}"], ("{zoo}",),
         zoo_copy(lambda z: None)),
    Case("predict-missing-run", ["predict", "--run", "{tmp}/no/such/run"], ("no encoder checkpoint",)),
    Case("predict-empty-run-directory", ["predict", "--run", "{empty}"], ("no encoder checkpoint",), empty_dir),
    Case("resume-not-a-run-directory", ["run", "--resume", "{empty}"], ("not a `wspace run` directory",), empty_dir),
    # checked before work starts (issue #11, item 9): nothing reused, built or trained first
    Case("run-seed-negative", run_args("--seed", "-1"), ("seed must be an integer from 0 to 4294967295, got -1",),
         absent=BEFORE_WORK),
    Case("run-seed-beyond-64-bits", run_args("--seed", str(2**65)), ("seed must be an integer from 0 to",),
         absent=BEFORE_WORK),
    Case("toml-seed-negative", run_args("--config", "{config}"), ("seed must be an integer from 0",),
         toml("seed = -7\n"), absent=BEFORE_WORK),
    Case("compare-seeds-negative", compare_args("--seeds=-3,-2"),
         ("every one of --seeds must be an integer from 0 to 4294967295, got -3",), absent=BEFORE_WORK),
    Case("compare-seeds-beyond-range", compare_args("--seed", "4294967295", "--seeds", "2"),
         ("the last of 2 seeds from --seed 4294967295 must be an integer",), absent=BEFORE_WORK),
    Case("run-device-meta", run_args("--device", "meta"), ("device 'meta' is not one wspace computes on",
                                                          "use cpu, cuda, cuda:N or mps"), absent=BEFORE_WORK),
    Case("run-device-xpu", run_args("--device", "xpu"), ("device 'xpu' is not one wspace computes on",),
         absent=BEFORE_WORK),
    Case("build-device-meta", build_args("--device", "meta"), ("device 'meta' is not one wspace computes on",)),
    Case("compare-device-cuda-without-gpu", compare_args("--device", "cuda"), ("torch sees no GPU", "--device cpu"),
         skip=_skip_with_gpu, absent=BEFORE_WORK),
    Case("compare-device-meta", compare_args("--device", "meta"), ("device 'meta' is not one wspace computes on",),
         absent=BEFORE_WORK),
    Case("run-encoder-hidden-huge", run_args("--encoder-option", "hidden=1000000"),
         ("encoder 'layerwise_statistics' with hidden=1000000 has", "parameters", "lower its size options"),
         absent=BEFORE_WORK),
    Case("run-probe-length-huge", run_args("--encoder", "interactive_probing", "--encoder-option", "length=1000000000"),
         ("length=1000000000 is longer than wspace accepts", "--encoder-option length=N"), absent=BEFORE_WORK),
    Case("run-probe-length-long", run_args("--encoder", "noninteractive_probing", "--encoder-option", "length=100000"),
         ("length=100000 is longer than wspace accepts (4096 steps",), absent=BEFORE_WORK),
    Case("compare-encoder-hidden-huge", compare_args("--encoder-option", "layerwise_statistics.hidden=10000000"),
         ("encoder 'layerwise_statistics' with hidden=10000000 has",), absent=BEFORE_WORK),
    Case("run-batch-size-huge", run_args("--batch-size", str(10**9)),
         ("a pretraining batch of 1,000,000,000 networks", "lower --batch-size"), absent=BEFORE_WORK),
    Case("run-tracking-garbage-scheme", [a for a in run_args() if a != "--no-tracking"]
         + ["--tracking-uri", "garbage://x"], ("has scheme 'garbage', which MLflow cannot track to", "--no-tracking"),
         absent=BEFORE_WORK),
    Case("run-out-dir-is-a-file", run_args("--out-dir", "{afile}"), ("--out-dir {afile} is a file, not a folder",),
         a_file, absent=BEFORE_WORK),
    Case("compare-out-is-a-file", compare_args("--out", "{afile}"), ("is a file",),
         a_file, absent=BEFORE_WORK),
]


def _format(args: list[str], values: dict) -> list[str]:
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case, workspace, tmp_path):
    reason = case.skip() if case.skip else None
    if reason:
        pytest.skip(reason)
    values = {"out": str(workspace["out"]), "zoo": str(workspace["zoo"]), "tmp": str(tmp_path),
              "port": str(free_port())}
    if case.setup:
        values.update(case.setup(tmp_path, workspace))
    guard = values.pop("guard", None)
    guarded = tree_checksums(guard) if guard else None
    result = CliRunner().invoke(cli, _format(case.args, values))
    assert result.exit_code in (1, 2), result.output  # 1: refused by wspace, 2: by click's option parsing
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.output[result.output.index("Error: "):].strip()
    assert "\n\n" not in message and len(message) < 1500, message  # one paragraph
    for pattern in case.patterns:
        assert pattern.format(**values) in message, message
    for work in case.absent:
        assert work not in result.output, result.output
    assert tree_checksums(workspace["zoo"]) == workspace["checksums"]  # the existing zoo is untouched
    if guard is not None:
        assert tree_checksums(guard) == guarded  # and so is the damaged one refused


SUBPROCESS_CASES = ["run-unknown-arch", "run-tracking-unreachable", "verify-truncated-weights",
                    "info-newer-format", "import-nan-weights"]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_true_exit_code_and_no_traceback(case_id, workspace, tmp_path):
    (case,) = [c for c in CASES if c.id == case_id]
    values = {"out": str(workspace["out"]), "zoo": str(workspace["zoo"]), "tmp": str(tmp_path),
              "port": str(free_port())}
    if case.setup:
        values.update(case.setup(tmp_path, workspace))
    values.pop("guard", None)
    proc = subprocess.run([sys.executable, "-m", "wspace", *_format(case.args, values)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_zoo_of_another_architecture_refused(workspace):
    with pytest.raises(WspaceError, match="holds 'lstm' networks, but 'gru' was expected; choose a zoo built "
                                          "with --arch gru, or use --arch lstm"):
        Zoo.open(workspace["zoo"], expect_arch="gru")
    assert Zoo.open(workspace["zoo"], expect_arch="lstm").num_models == ZOO_MODELS


def test_case_count():
    """The list above is what the report counts; keep ids unique."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 75
