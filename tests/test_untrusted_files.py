"""Untrusted files: zoos, checkpoints and manifests from elsewhere never run code and never make
wspace read or write outside the zoo. Every hostile payload here WOULD write a marker file if it
were unpickled (checked by unpickling it unsafely once), and wspace must refuse it with a clear
message, exit code 1, no traceback, and no marker. A meta-test keeps every loader in the project
on the safe side (no allow_pickle=True, torch.load always weights_only=True)."""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wspace.cli import cli
from wspace.config import resolve
from wspace.training.checkpoint import load_checkpoint
from wspace_core.registry import WspaceError
from wspace.zoo import Zoo, zoo_info
from wspace.zoo.build import build_zoo, preset_config
from wspace.zoo.chunks import CHUNKS_DIR, chunk_dirs
from wspace.zoo.files import sha256_file
from wspace.zoo.manifest import CHECKSUM_KEY, MANIFEST_NAME, fingerprint, manifest_checksum

ROOT = Path(__file__).resolve().parents[1]


class WritesMarker:
    """Unpickled, this object opens (creates) the marker file: a stand-in for any code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payloads(marker: Path) -> dict[str, object]:
    """Checkpoint contents carrying code, alongside plausible weights."""
    weights = {"layer.weight": torch.zeros(2, 2)}
    return {
        "reduce_instance": {"encoder": weights, "step": 3, "evil": WritesMarker(marker)},
        "nested_in_state": {"encoder": {"w": torch.zeros(1), "x": [WritesMarker(marker)]}, "step": 1},
        "pickled_callable": {"encoder": weights, "hook": print, "evil": WritesMarker(marker)},
    }


def _save(obj, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def hostile_checkpoints(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """name -> checkpoint file; each one proven to write ``marker`` when loaded unsafely."""
    folder = tmp_path / "hostile"
    folder.mkdir(exist_ok=True)
    files = {name: _save(obj, folder / f"{name}.pt") for name, obj in _payloads(marker).items()}
    files["legacy_format"] = _save(_payloads(marker)["reduce_instance"], folder / "legacy.pt", legacy=True)
    with open(folder / "plain_pickle.pt", "wb") as f:
        pickle.dump({"encoder": {}, "evil": WritesMarker(marker)}, f)
    files["plain_pickle"] = folder / "plain_pickle.pt"
    for name, path in files.items():
        try:
            torch.load(path, weights_only=False)  # the unsafe way: the payload does run
        except Exception:  # the plain pickle is no torch file, but is unpickled on the way
            pass
        assert marker.exists(), f"payload {name} is not hostile: the test would prove nothing"
        marker.unlink()
    return files


def assert_clean_refusal(result, *patterns: str) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.output[result.output.index("Error: "):].strip()
    assert "\n\n" not in message
    for pattern in patterns:
        assert pattern in message, message
    return message


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "zoo"
    torch.manual_seed(0)
    build_zoo(preset_config("formal_languages", "smoke", num_models=4, chunk_size=2, steps=4), path)
    return path


def copy_zoo(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def tree_checksums(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def edit_manifest(path: Path, edit, refingerprint: bool = False, reseal: bool = True) -> None:
    """Edit the manifest as a forger would: resealing its own checksum (``reseal``), and with
    ``refingerprint`` recomputing the fingerprint too."""
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    edit(manifest)
    if refingerprint:  # a careful forger recomputes the fingerprint
        manifest["fingerprint"] = fingerprint(manifest)
    if reseal:
        manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


# ---- checkpoints ---------------------------------------------------------------------------------

CHECKPOINT_KINDS = ["reduce_instance", "nested_in_state", "pickled_callable", "legacy_format", "plain_pickle"]


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_load_checkpoint_refuses_code(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = hostile_checkpoints(tmp_path, marker)[kind]
    with pytest.raises(WspaceError, match="cannot be loaded as plain weights.*tensors and plain data only"):
        load_checkpoint(path)
    assert not marker.exists()


def _run_dir(tmp_path: Path) -> Path:
    """A run directory as `wspace run` leaves it when killed during pretraining (config.json)."""
    out = tmp_path / "out"
    run_dir = out / "runs" / "20240101-000000-layerwise_statistics-formal_languages"
    run_dir.mkdir(parents=True)
    config = resolve(preset="smoke", encoder="layerwise_statistics", out_dir=str(out))
    (run_dir / "config.json").write_text(json.dumps(attrs.asdict(config)))
    return run_dir


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_predict_and_resume_refuse_code(tmp_path, kind):
    marker = tmp_path / "MARKER"
    hostile = hostile_checkpoints(tmp_path, marker)[kind]
    run_dir = _run_dir(tmp_path)
    shutil.copy(hostile, run_dir / "encoder.pt")
    shutil.copy(hostile, run_dir / "checkpoint.pt")
    before = tree_checksums(run_dir)
    runner = CliRunner()
    assert_clean_refusal(runner.invoke(cli, ["predict", "--run", str(run_dir)]), "cannot be loaded as plain weights")
    assert_clean_refusal(runner.invoke(cli, ["predict", "--run", str(run_dir / "encoder.pt")]),
                         "cannot be loaded as plain weights")
    message = assert_clean_refusal(runner.invoke(cli, ["run", "--resume", str(run_dir), "--no-tracking"]),
                                   "checkpoint.pt", "cannot be loaded as plain weights")
    assert "delete it" in message
    assert not marker.exists()
    assert tree_checksums(run_dir) == before  # refused, not deleted or rewritten
    assert not (tmp_path / "out" / "zoos").exists()  # refused before any work


def test_hostile_encoder_from_mlflow_refused(tmp_path):
    from wspace.tracking import Tracker

    marker = tmp_path / "MARKER"
    hostile = hostile_checkpoints(tmp_path, marker)["reduce_instance"]
    staged = tmp_path / "stage" / "encoder.pt"
    staged.parent.mkdir()
    shutil.copy(hostile, staged)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, experiment="hostile")
    with tracker.start_run("hostile") as run_id:
        tracker.log_artifact(staged)
    result = CliRunner().invoke(cli, ["predict", "--run", run_id, "--tracking-uri", uri])
    assert_clean_refusal(result, "cannot be loaded as plain weights")
    assert not marker.exists()


def test_safe_but_foreign_checkpoints_refused(tmp_path):
    """Plain data, but not what wspace wrote: refused by name, not with a KeyError."""
    run_dir = _run_dir(tmp_path)
    cases = {
        "not_a_dict": [torch.zeros(3)],
        "no_config": {"encoder": {"w": torch.zeros(1)}},
        "bad_config_json": {"encoder": {}, "config": "{not json"},
        "unknown_config_key": {"encoder": {}, "config": json.dumps({"encodr": "x", "pretrain": {}})},
    }
    runner = CliRunner()
    for name, payload in cases.items():
        torch.save(payload, run_dir / "encoder.pt")
        result = runner.invoke(cli, ["predict", "--run", str(run_dir)])
        assert_clean_refusal(result, "encoder.pt")
    (run_dir / "encoder.pt").write_bytes(b"PK\x03\x04 truncated zip")
    assert_clean_refusal(runner.invoke(cli, ["predict", "--run", str(run_dir)]), "cannot be loaded as plain weights")
    torch.save({"step": "three"}, run_dir / "checkpoint.pt")
    assert_clean_refusal(runner.invoke(cli, ["run", "--resume", str(run_dir), "--no-tracking"]),
                         "not a wspace pretraining checkpoint")
    (run_dir / "config.json").write_text(json.dumps({"encoder": "x", "pretrain": {"stepz": 1}}))
    assert_clean_refusal(runner.invoke(cli, ["run", "--resume", str(run_dir), "--no-tracking"]), "stepz")


# ---- zoos ----------------------------------------------------------------------------------------

def _object_array(marker: Path, shape: tuple[int, ...]) -> np.ndarray:
    hostile = np.empty(shape, dtype=object)
    hostile.flat[0] = WritesMarker(marker)
    return hostile


def _plant_object_array(path: Path, name: str, marker: Path, manifest_dir: Path | None) -> None:
    """Replace ``name``.npy by a pickled object array; make the manifest (or chunk.json) agree."""
    file = path / f"{name}.npy"
    shape = np.load(file, mmap_mode="r").shape
    np.save(file, _object_array(marker, shape), allow_pickle=True)
    np.load(file, allow_pickle=True)  # the unsafe way: the payload does run
    assert marker.exists()
    marker.unlink()
    entry = {"dtype": "|O", "sha256": sha256_file(file), "bytes": file.stat().st_size}
    if manifest_dir is not None:
        edit_manifest(manifest_dir, lambda m: m["arrays"][name].update(entry))
    else:
        record = json.loads((path / "chunk.json").read_text())
        record["arrays"][name].update(entry)
        (path / "chunk.json").write_text(json.dumps(record))


@pytest.mark.parametrize("name", ["weights", "metadata", "rollout_outputs"])
def test_pickled_object_array_in_a_zoo_refused(tmp_path, small_zoo, name):
    marker = tmp_path / "MARKER"
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    _plant_object_array(zoo, name, marker, zoo)
    before = tree_checksums(zoo)
    runner = CliRunner()
    assert_clean_refusal(runner.invoke(cli, ["zoo", "verify", str(zoo)]), f"{name}.npy holds a Python-object (pickled)")
    if name == "metadata":  # info reads the metadata alone
        assert_clean_refusal(runner.invoke(cli, ["zoo", "info", str(zoo)]), "pickled")
    assert_clean_refusal(runner.invoke(cli, ["zoo", "merge", str(zoo), "--out", str(tmp_path / "merged")]))
    with pytest.raises(WspaceError, match="pickled"):
        Zoo.open(zoo, verify=False)
    assert not marker.exists() and tree_checksums(zoo) == before


@pytest.fixture(scope="module")
def building_zoo(tmp_path_factory) -> Path:
    """A zoo interrupted after its first chunk (of two)."""
    path = tmp_path_factory.mktemp("building") / "building"
    config = preset_config("formal_languages", "smoke", num_models=4, chunk_size=2, steps=4)

    def stop(progress):
        if progress.chunks_done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(config, path, progress=stop)
    assert len(chunk_dirs(path)) == 1
    return path


def test_pickled_array_in_a_committed_chunk_refused(tmp_path, building_zoo):
    marker = tmp_path / "MARKER"
    path = copy_zoo(building_zoo, tmp_path / "building")
    (chunk,) = chunk_dirs(path).values()
    _plant_object_array(chunk, "metadata", marker, None)
    runner = CliRunner()
    assert_clean_refusal(runner.invoke(cli, ["zoo", "info", str(path)]), "pickled")
    resume = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--num-models", "4",
              "--chunk-size", "2", "--steps", "4", "--out", str(path), "--resume"]
    assert_clean_refusal(runner.invoke(cli, resume), "pickled")
    assert not marker.exists() and (chunk / "metadata.npy").exists()


def test_pickled_arrays_in_a_published_zoo_refused(tmp_path):
    marker = tmp_path / "MARKER"
    src = tmp_path / "published"
    src.mkdir()
    for name in ("parameters", "sequences", "logits", "tasks", "num_step_correct"):
        np.save(src / f"{name}.npy", _object_array(marker, (3, 2)), allow_pickle=True)
    result = CliRunner().invoke(cli, ["zoo", "import-paper", str(src), str(tmp_path / "zoo"),
                                      "--task", "formal_languages"])
    assert_clean_refusal(result, "pickled")
    assert not marker.exists() and not (tmp_path / "zoo").exists()


ESCAPES = ["../weights.npy", "../../outside.npy", "/etc/passwd", "sub/../weights.npy", "..", "C:\\weights.npy"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_manifest_paths_outside_the_zoo_refused(tmp_path, small_zoo, bad):
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    outside = tmp_path / "weights.npy"  # what ../weights.npy would reach: a valid array
    shutil.copy(zoo / "weights.npy", outside)
    edit_manifest(zoo, lambda m: m["arrays"]["weights"].update(file=bad))
    runner = CliRunner()
    for command in (["zoo", "verify", str(zoo)], ["zoo", "info", str(zoo)]):
        assert_clean_refusal(runner.invoke(cli, command), "not a plain file name inside the zoo directory")
    edit_manifest(zoo, lambda m: m["arrays"]["metadata"].update(file=bad))
    assert_clean_refusal(runner.invoke(cli, ["zoo", "info", str(zoo)]), "not a plain file name")


def test_chunk_record_paths_outside_the_zoo_refused(tmp_path, building_zoo):
    path = copy_zoo(building_zoo, tmp_path / "building")
    (chunk,) = chunk_dirs(path).values()
    record = json.loads((chunk / "chunk.json").read_text())
    record["arrays"]["metadata"]["file"] = "../../manifest.json"
    (chunk / "chunk.json").write_text(json.dumps(record))
    with pytest.raises(WspaceError, match="not a plain file name"):
        zoo_info(path)
    resume = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--num-models", "4",
              "--chunk-size", "2", "--steps", "4", "--out", str(path), "--resume"]
    assert_clean_refusal(CliRunner().invoke(cli, resume), "not a plain file name")
    assert (path / CHUNKS_DIR).is_dir() and (path / MANIFEST_NAME).exists()


def test_forged_manifest_types_refused(tmp_path, small_zoo):
    """A forger who recomputes the fingerprint still cannot crash the readers."""
    edits = {
        "arrays_not_object": lambda m: m.update(arrays=[1, 2]),
        "architecture_not_object": lambda m: m.update(architecture="lstm"),
        "shape_not_list": lambda m: m["arrays"]["weights"].update(shape=7),
        "dtype_not_numpy": lambda m: m["arrays"]["weights"].update(dtype="definitely-not-a-dtype"),
        "num_chunks_wrong": lambda m: m.update(num_chunks=99),
        "columns_not_names": lambda m: m.update(metadata_columns=["model", "snapshot", "step", "split", 3]),
    }
    runner = CliRunner()
    for name, edit in edits.items():
        zoo = copy_zoo(small_zoo, tmp_path / name)
        edit_manifest(zoo, edit, refingerprint=True)
        for command in (["zoo", "verify", str(zoo)], ["zoo", "info", str(zoo)]):
            assert_clean_refusal(runner.invoke(cli, command), "re-copy")


# ---- what gives the data its meaning, and what the arrays hold (issue #11, items 5, 6, 12) -----

def _swap_columns(manifest: dict, a: str = "split", b: str = "performance") -> None:
    columns = manifest["metadata_columns"]
    i, j = columns.index(a), columns.index(b)
    columns[i], columns[j] = columns[j], columns[i]


RELABELLINGS = {
    "metadata_columns": _swap_columns,
    "snapshot_steps": lambda m: m.update(snapshot_steps=[s * 2 for s in m["snapshot_steps"]]),
    "num_models": lambda m: m.update(num_models=m["num_models"] - 1),
    "rows_per_model": lambda m: m.update(rows_per_model=m["rows_per_model"] - 1),
    "chunk_size": lambda m: m.update(chunk_size=m["chunk_size"] + 1),
    "array_entry": lambda m: m["arrays"]["metadata"].update(bytes=1),
}


@pytest.mark.parametrize("field", list(RELABELLINGS))
def test_relabelled_manifest_refused(tmp_path, small_zoo, field):
    """Every field that gives the data its meaning is covered: swapping the `split` and
    `performance` names (or editing the steps, counts, chunking, a file entry) is refused."""
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    edit_manifest(zoo, RELABELLINGS[field], reseal=False)
    runner = CliRunner()
    for command in (["zoo", "verify", str(zoo)], ["zoo", "info", str(zoo)]):
        assert_clean_refusal(runner.invoke(cli, command), "re-copy")
    with pytest.raises(WspaceError):
        Zoo.open(zoo, verify=False)
    if field == "metadata_columns":  # passes every other check: the manifest's own checksum tells
        message = assert_clean_refusal(runner.invoke(cli, ["zoo", "verify", str(zoo)]))
        assert "manifest's checksum (manifest_sha256) does not match" in message and "metadata_columns" in message


def test_manifest_from_before_checksums_still_opens(tmp_path, small_zoo):
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    edit_manifest(zoo, lambda m: m.pop(CHECKSUM_KEY), reseal=False)
    result = CliRunner().invoke(cli, ["zoo", "verify", str(zoo)])
    assert result.exit_code == 0, result.output
    assert "matches its manifest" in result.stdout and "predates manifest checksums" in result.stderr
    assert Zoo.open(zoo).num_models == 4


def _forge_array(zoo: Path, name: str, array: np.ndarray) -> None:
    """Replace ``name``.npy and make the manifest agree (sha256 and all, resealed)."""
    file = zoo / f"{name}.npy"
    np.save(file, array)
    edit_manifest(zoo, lambda m: m["arrays"][name].update(dtype=array.dtype.str, shape=list(array.shape),
                                                         sha256=sha256_file(file), bytes=file.stat().st_size))


def test_nan_weights_refused(tmp_path, small_zoo):
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    weights = np.array(np.load(zoo / "weights.npy"))
    weights[5, 2] = np.nan
    weights[9, 0] = np.inf
    _forge_array(zoo, "weights", weights)
    message = assert_clean_refusal(CliRunner().invoke(cli, ["zoo", "verify", str(zoo)]),
                                   "weights are NaN or infinite at rows 5 (model 1, snapshot 1), 9 (model 2")
    assert "rebuild" in message
    with pytest.raises(WspaceError, match="NaN or infinite"):
        Zoo.open(zoo)


@pytest.mark.parametrize("token", [99, -1])
def test_out_of_vocabulary_tokens_refused(tmp_path, small_zoo, token):
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    inputs = np.array(np.load(zoo / "rollout_inputs.npy"))
    inputs[3, 1, 2] = token
    _forge_array(zoo, "rollout_inputs", inputs)
    assert_clean_refusal(CliRunner().invoke(cli, ["zoo", "verify", str(zoo)]),
                         "rollout inputs hold token ids outside 0..5 (the task's 6 symbols) at rows 3 (model 0")
    with pytest.raises(WspaceError, match="token ids outside"):
        Zoo.open(zoo)


def test_npy_header_shape_overflowing_int64_refused(tmp_path, small_zoo):
    """rows x 2**62 float32 is 2**68 bytes: an int64 product wraps to 0, so a header-only file
    looked exactly as long as its header said."""
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    rows = json.loads((zoo / MANIFEST_NAME).read_text())["arrays"]["weights"]["shape"][0]
    file = zoo / "weights.npy"
    with open(file, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, 2 ** 62)})
    edit_manifest(zoo, lambda m: m["arrays"]["weights"].update(shape=[rows, 2 ** 62], sha256=sha256_file(file),
                                                              bytes=file.stat().st_size))
    message = assert_clean_refusal(CliRunner().invoke(cli, ["zoo", "verify", str(zoo)]),
                                   "weights.npy is", "truncated or damaged")
    assert f"needs {128 + rows * 2 ** 64}" in message or "needs " in message
    assert " -" not in message.split("needs")[1][:3]


def test_empty_chunk_folder_names_the_fix(tmp_path, building_zoo):
    path = copy_zoo(building_zoo, tmp_path / "building")
    (path / CHUNKS_DIR / "chunk-00001").mkdir()
    for command in (["zoo", "info", str(path)],
                    ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--num-models", "4",
                     "--chunk-size", "2", "--steps", "4", "--out", str(path), "--resume"]):
        assert_clean_refusal(CliRunner().invoke(cli, command), "chunk-00001", "delete",
                             "rerun the build with --resume")


# ---- the project's own loaders -------------------------------------------------------------------

UNPICKLING_MODULES = ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal")
UNSAFE_CALLS = ("jit.load", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "marshal.loads")


def _loader_offences(tree: ast.AST) -> list[str]:
    """Every place in a module that could unpickle: unpickling modules imported, allow_pickle not
    False, torch.load without weights_only=True, other unsafe loaders."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNPICKLING_MODULES or \
                    (node.module.startswith("torch") and any(a.name == "load" for a in node.names)):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords}
            func = ast.unparse(node.func)
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"line {node.lineno}: {func}(allow_pickle=...) not False")
            if func.endswith(("torch.load", "serialization.load")):
                only = keywords.get("weights_only")
                if not (isinstance(only, ast.Constant) and only.value is True):
                    found.append(f"line {node.lineno}: {func} without weights_only=True")
            if func.endswith(UNSAFE_CALLS):
                found.append(f"line {node.lineno}: {func}")
    return found


def test_meta_no_unsafe_loader_anywhere():
    roots = [ROOT / "wspace_core", ROOT / "wspace", ROOT / "plugins", ROOT / "examples"]
    files = [p for root in roots if root.is_dir() for p in root.rglob("*.py") if ".egg-info" not in str(p)]
    assert len(files) > 20
    offences = {str(p.relative_to(ROOT)): o for p in files if (o := _loader_offences(ast.parse(p.read_text())))}
    assert offences == {}
    torch_loads = [p for p in files if "torch.load(" in p.read_text()]
    assert torch_loads, "the meta-test must see the checkpoint loader"


def test_meta_test_catches_offences():
    bad = ("import pickle\nimport torch\nimport numpy as np\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\n"
           "torch.jit.load(p)\n")
    assert len(_loader_offences(ast.parse(bad))) == 5
    good = "torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p, mmap_mode='r', allow_pickle=False)\n"
    assert _loader_offences(ast.parse(good)) == []


def test_zip_checkpoint_with_foreign_global_refused(tmp_path):
    """Hand-made: a torch zip whose data.pkl names os.system directly (no wspace class involved)."""
    marker = tmp_path / "MARKER"
    path = _save({"w": torch.zeros(1)}, tmp_path / "ok.pt")
    hostile = tmp_path / "forged.pt"
    payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(hostile, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = payload
            dst.writestr(item, data)
    with pytest.raises(WspaceError, match="cannot be loaded as plain weights"):
        load_checkpoint(hostile)
    assert not marker.exists()
    pickle.loads(payload)  # proof: this payload runs a command when unpickled
    assert marker.exists()

