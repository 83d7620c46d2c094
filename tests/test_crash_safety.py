"""Crash safety of the real commands: `wspace zoo build` and `wspace run` are SIGKILLed at seeded
random moments (during training, while a chunk is being committed, while the zoo is being
consolidated), `wspace zoo info` must tell the truth after every kill, and `--resume` must end
in exactly what an uninterrupted run gives. Also: two builders on one directory, stale locks.

Subprocesses run single-threaded (OMP_NUM_THREADS=1), the reference build too, so the arrays
compare byte for byte. `pytest -s` prints every kill point."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import pytest
from click.testing import CliRunner

from wspace.cli import cli
from wspace.zoo import Zoo
from wspace.zoo import store as store_module
from wspace.zoo.chunks import CHUNKS_DIR, TMP_PREFIX, chunk_dirs, read_chunk
from wspace.zoo.lock import LOCK_NAME
from wspace.zoo.manifest import ARRAY_NAMES, MANIFEST_NAME, chunk_models

pytestmark = pytest.mark.slow

NUM_MODELS, CHUNK_SIZE = 16, 2  # 8 chunks
BUILD = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--seed", "3",
         "--num-models", str(NUM_MODELS), "--chunk-size", str(CHUNK_SIZE)]
SEED = 20240607
#: the file writes of a commit and of finalize made slower in the process to be killed, so that a
#: kill can land inside them (the arrays written are unchanged)
SLOW_IO_S = 0.25
SLOW_IO = f"""
import sys, time
from wspace.zoo import store

def slow(real):
    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        time.sleep({SLOW_IO_S})
        return out
    return wrapper

store.save_npy = slow(store.save_npy)
store._consolidate = slow(store._consolidate)
from wspace.cli import main
sys.argv[0] = "wspace"
main()
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def spawn(args: list[str], log: Path, slow_io: bool = False) -> subprocess.Popen:
    prefix = ["-c", SLOW_IO] if slow_io else ["-m", "wspace"]
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, *prefix, *args], stdout=f, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wspace", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def wait_until(proc: subprocess.Popen, condition, timeout: float = 120.0) -> bool:
    """True once ``condition()`` holds while ``proc`` runs; False if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError(f"nothing happened within {timeout} s")


def sleep_while_running(proc: subprocess.Popen, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    return True


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def committed_on_disk(path: Path) -> set[int]:
    return set(chunk_dirs(path))


def temp_chunks(path: Path) -> list[str]:
    root = path / CHUNKS_DIR
    try:
        return [p for p in os.listdir(root) if p.startswith(TMP_PREFIX)]
    except FileNotFoundError:
        return []


def temp_consolidated(path: Path) -> list[str]:
    try:
        return [p for p in os.listdir(path) if p.startswith(".") and ".npy.tmp-" in p]
    except FileNotFoundError:
        return []


def lock_holder(path: Path) -> dict | None:
    try:
        data = json.loads((path / LOCK_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def expand_ranges(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def check_info_is_truthful(path: Path, killed_pid: int) -> set[int]:
    """`wspace zoo info --json` after a kill agrees with what is on disk; returns the committed chunks."""
    result = CliRunner().invoke(cli, ["zoo", "info", str(path), "--json"])
    assert "Traceback" not in result.output
    if not (path / MANIFEST_NAME).exists():  # killed before the build wrote anything
        assert result.exit_code == 1 and ("not a wspace zoo" in result.output or "no zoo at" in result.output)
        return set()
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert info["status"] == manifest["status"]
    S = manifest["rows_per_model"]
    if manifest["status"] == "building":
        disk = committed_on_disk(path)
        for chunk_id, chunk_dir in chunk_dirs(path).items():  # nothing half-written under a final name
            read_chunk(chunk_dir, manifest["fingerprint"], verify=True)
        models = sum(len(chunk_models(c, NUM_MODELS, CHUNK_SIZE)) for c in disk)
        assert info["chunks"] == {"committed": len(disk), "total": manifest["num_chunks"],
                                  "chunk_size": CHUNK_SIZE}
        assert expand_ranges(info["committed_chunk_ids"]) == disk
        assert info["models"] == {"done": models, "total": NUM_MODELS}
        assert info["sizes"]["rows"] == models * S
    else:
        disk = set(range(manifest["num_chunks"]))
        assert info["chunks"]["committed"] == manifest["num_chunks"] and info["sizes"]["rows"] == NUM_MODELS * S
    holder = lock_holder(path)
    if holder is not None:
        (lock,) = [entry for entry in info["locks"] if entry["file"] == LOCK_NAME]
        assert lock["pid"] == killed_pid and lock["alive"] is False
    return disk


def test_zoo_build_survives_sigkill_anywhere(tmp_path):
    assert hasattr(store_module, "save_npy") and hasattr(store_module, "_consolidate")  # what SLOW_IO slows
    rng = random.Random(SEED)
    path = tmp_path / "zoo"
    # kinds of kill point, in the order they happen; the moment within each is drawn from rng
    plan = ["startup", "commit", "training", "lock", "commit", "training", "training", "finalize"]
    survived: list[str] = []
    committed: set[int] = set()
    stale_pid = None
    for attempt, kind in enumerate(plan):
        args = BUILD + ["--out", str(path)] + (["--resume"] if attempt else [])
        log = tmp_path / f"build-{attempt}.log"
        before = len(committed_on_disk(path))
        old_temps = set(temp_chunks(path)) | set(temp_consolidated(path))  # a dead writer's leftovers
        new_temps = lambda lister: [t for t in lister(path) if t not in old_temps]  # noqa: E731
        proc = spawn(args, log, slow_io=kind in ("commit", "finalize"))
        if kind == "startup":
            hit = sleep_while_running(proc, rng.uniform(0.0, 2.5))
        elif kind == "lock":
            hit = wait_until(proc, lambda: (lock_holder(path) or {}).get("pid") == proc.pid)
        elif kind == "training":
            delay = rng.uniform(0.0, 0.6)
            hit = (wait_until(proc, lambda: len(committed_on_disk(path)) > before)
                   and sleep_while_running(proc, delay))
        elif kind == "commit":
            delay = rng.uniform(0.0, 2 * SLOW_IO_S)
            hit = wait_until(proc, lambda: bool(new_temps(temp_chunks))) and sleep_while_running(proc, delay)
        else:
            delay = rng.uniform(0.0, 2 * SLOW_IO_S)
            hit = wait_until(proc, lambda: bool(new_temps(temp_consolidated))) and sleep_while_running(proc, delay)
        assert hit, f"kill point {kind} was missed: the build ended first\n{log.read_text()[-2000:]}"
        kill(proc)
        text = log.read_text()
        assert "Traceback" not in text, text
        if stale_pid is not None:  # it took the dead builder's lock over, and said so
            assert f"taking over the stale lock of pid {stale_pid}" in text, text
        evidence = {"commit": new_temps(temp_chunks), "finalize": new_temps(temp_consolidated)}.get(kind)
        assert evidence is None or evidence, f"the {kind} kill did not land inside the {kind}"
        # killed between creating the lock file and writing it: its OS file lock went with the
        # process, so the next builder takes the empty lock at once (no grace period to wait out)
        now = check_info_is_truthful(path, proc.pid)
        assert committed <= now, f"committed chunks {sorted(committed - now)} were lost by a kill"
        committed = now
        stale_pid = proc.pid if lock_holder(path) else None
        survived.append(f"{kind} (chunks committed: {len(now)})")
        print(f"kill point {len(survived)}: {survived[-1]}")

    final = run_cli(BUILD + ["--out", str(path), "--resume"])
    assert final.returncode == 0, final.stdout + final.stderr
    assert "Traceback" not in final.stderr and not (path / CHUNKS_DIR).exists() and not (path / LOCK_NAME).exists()
    assert not [p for p in os.listdir(path) if ".tmp-" in p]

    reference = tmp_path / "reference"
    built = run_cli(BUILD + ["--out", str(reference)])
    assert built.returncode == 0, built.stderr
    resumed, uninterrupted = Zoo.open(path, verify=True), Zoo.open(reference, verify=True)
    checks = 0
    assert resumed.fingerprint == uninterrupted.fingerprint
    checks += 1
    for name in ARRAY_NAMES:
        file = resumed.manifest["arrays"][name]["file"]
        assert (path / file).read_bytes() == (reference / file).read_bytes(), f"{name} differs"
        assert resumed.manifest["arrays"][name] == uninterrupted.manifest["arrays"][name]
        checks += 1
    counts = np.bincount(resumed.metadata["model"].astype(int), minlength=NUM_MODELS)
    assert counts.tolist() == [resumed.rows_per_model] * NUM_MODELS  # none lost, none duplicated
    checks += 1
    assert np.array_equal(resumed.metadata["snapshot"], np.tile(np.arange(resumed.rows_per_model), NUM_MODELS))
    checks += 1
    print(f"kill points survived: {len(survived)}; zoo-equality checks passed: {checks}")
    assert len(survived) == len(plan)


def test_second_builder_refused_and_stale_lock_taken_over(tmp_path):
    path = tmp_path / "zoo"
    big = [a if a != str(NUM_MODELS) else "96" for a in BUILD]  # long enough to outlive the checks
    first = spawn(big + ["--out", str(path)], tmp_path / "first.log")
    try:
        assert wait_until(first, lambda: (lock_holder(path) or {}).get("pid") == first.pid)
        for extra in ([], ["--resume"]):
            second = run_cli(big + ["--out", str(path)] + extra)
            assert second.returncode == 1
            assert f"is being built by pid {first.pid} on {socket.gethostname()}" in second.stderr
            assert "wait for it" in second.stderr and "Traceback" not in second.stderr
    finally:
        kill(first)
    assert lock_holder(path)["pid"] == first.pid  # the dead builder's lock is left behind

    # a fake lock of a process that is gone: the build proceeds, saying so once
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (fresh / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                               "since": "2024-01-01T00:00:00+00:00"}))
    small = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--num-models", "2",
             "--chunk-size", "2", "--steps", "4", "--out", str(fresh)]
    done = run_cli(small)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"taking over the stale lock of pid {gone.pid}") == 1, done.stderr
    assert "zoo complete" in done.stdout and not (fresh / LOCK_NAME).exists()


RUN_TOML = """
preset = "smoke"
encoder = "layerwise_statistics"
[zoo]
num_models = 12
[pretrain]
steps = 120
eval_every = 40
checkpoint_every = 10
patience = 50
"""


def test_killed_pretraining_resumes_into_the_same_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from wspace.training.checkpoint import load_checkpoint

    toml = tmp_path / "run.toml"
    toml.write_text(RUN_TOML)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    args = ["run", "--config", str(toml), "--out-dir", str(out), "--tracking-uri", uri]
    proc = spawn(args, tmp_path / "killed.log")
    checkpoints = lambda: list(out.glob("runs/*/checkpoint.pt"))  # noqa: E731
    assert wait_until(proc, lambda: bool(checkpoints()), timeout=300), (tmp_path / "killed.log").read_text()
    kill(proc)
    (checkpoint,) = checkpoints()
    run_dir = checkpoint.parent
    assert 0 < load_checkpoint(checkpoint)["step"] < 120 and not (run_dir / "results.json").exists()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["tracking_uri"] == uri

    refused = run_cli(["run", "--resume", str(run_dir), "--encoder", "dwsnet"])
    assert refused.returncode == 1 and "drop --encoder" in refused.stderr

    resumed = run_cli(["run", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert "from its last checkpoint" in resumed.stderr and "Traceback" not in resumed.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["encoder_result"]["steps_done"] == 120
    assert results["mlflow_run_id"] == record["mlflow_run_id"]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("wspace")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]]  # ONE run
    assert runs[0].info.status == "FINISHED"
    train_steps = {m.step for m in client.get_metric_history(record["mlflow_run_id"], "train/loss")}
    assert train_steps == set(range(10, 121, 10))
    val_steps = {m.step for m in client.get_metric_history(record["mlflow_run_id"], "validation/reverse_kl")}
    assert val_steps == {0, 40, 80, 120}

    # a resumed run ends where an uninterrupted one does
    again = run_cli(["run", "--config", str(toml), "--out-dir", str(out), "--no-tracking"])
    assert again.returncode == 0, again.stderr
    (other,) = [p for p in out.glob("runs/*/results.json") if p.parent != run_dir]
    uninterrupted = json.loads(other.read_text())
    assert uninterrupted["encoder_result"]["best_validation"] == pytest.approx(
        results["encoder_result"]["best_validation"], rel=1e-6)
    flat = lambda r: {f"{s}/{m}": v for s, ms in r["encoder_result"]["metrics"].items()  # noqa: E731
                      for m, v in ms.items()}
    assert flat(uninterrupted) == pytest.approx(flat(results), rel=1e-6)

    # resuming a finished run does nothing and says so
    finished = run_cli(["run", "--resume", str(run_dir)])
    assert finished.returncode == 0 and "already finished" in finished.stderr


# ---- the builder's worker processes end with the build ------------------------------------------

#: a build long enough that its two workers are still training when the parent is stopped
LONG_BUILD = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--num-models", "32",
              "--chunk-size", "32", "--steps", "100000"]


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def _pool_workers(pid: int) -> set[int]:
    """The pool's worker processes among ``pid``'s children (not multiprocessing's resource tracker)."""
    workers = set()
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            workers.add(child)
    return workers


def _alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if _alive(p)}


def _models_done(log: Path) -> float:
    return max([float(m) for m in re.findall(r"([0-9.]+)/32 models", log.read_text())] or [0.0])


def _start_long_build(tmp_path: Path) -> tuple[subprocess.Popen, set[int]]:
    proc = spawn(LONG_BUILD + ["--out", str(tmp_path / "zoo")], tmp_path / "build.log")
    workers: set[int] = set()
    try:
        assert wait_until(proc, lambda: len(workers.update(_pool_workers(proc.pid)) or workers) >= 2), \
            (tmp_path / "build.log").read_text()
        # the bar counts models trained: the workers have their groups and are training them
        assert wait_until(proc, lambda: _models_done(tmp_path / "build.log") > 0), \
            (tmp_path / "build.log").read_text()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc, workers


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_workers_end_when_the_build_is_killed_outright(tmp_path):
    proc, workers = _start_long_build(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone: it cannot stop its pool
        assert proc.wait(timeout=30) == -signal.SIGKILL
        left = _wait_gone(workers, timeout=20)
        assert not left, f"worker processes {sorted(left)} outlived the killed build"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_sigterm_stops_a_build_like_ctrl_c(tmp_path):
    proc, workers = _start_long_build(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        assert not _wait_gone(workers, timeout=20)
        text = (tmp_path / "build.log").read_text()
        assert "interrupted" in text and "--resume" in text and "Traceback" not in text, text
        assert not (tmp_path / "zoo" / LOCK_NAME).exists()  # the lock was released
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


# ---- what wspace may write into, links, live locks, failing disks (issue #11) --------------------

SMALL = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--num-models", "4",
         "--chunk-size", "2", "--steps", "4"]


def tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` (links not followed) -> its bytes (None for directories)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        key = str(p.relative_to(path))
        out[key] = None if p.is_dir() and not p.is_symlink() else (
            os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
    return out


def refusal(result, *patterns: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), repr(result.exception)
    message = result.output[result.output.index("Error: "):].strip()
    for pattern in patterns:
        assert pattern in message, message
    return message


@pytest.fixture(scope="module")
def partial_zoo(tmp_path_factory) -> Path:
    """A smoke build of 4 models interrupted after its first chunk (of two)."""
    from wspace.zoo.build import build_zoo, preset_config

    path = tmp_path_factory.mktemp("partial") / "zoo"

    def stop(progress):
        if progress.chunks_done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(preset_config("formal_languages", "smoke", num_models=4, chunk_size=2, steps=4), path,
                  progress=stop, workers=1)
    assert set(chunk_dirs(path)) == {0}
    return path


def copy_of(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_users_chunks_folder_is_never_taken_for_a_zoo(tmp_path):
    """Issue #11.1: `mkdir -p v/chunks && echo x > v/chunks/keep.txt && wspace zoo build ... --out v`
    deleted v/chunks. Only a directory wspace marked (or a zoo's manifest) is written into."""
    users = tmp_path / "v"
    (users / "chunks").mkdir(parents=True)
    (users / "chunks" / "keep.txt").write_text("x")
    (users / ".profile").write_text("mine")
    before = tree(users)
    runner = CliRunner()
    message = refusal(runner.invoke(cli, SMALL + ["--out", str(users)]),
                      f"{users} exists, is not empty (chunks) and is not a wspace zoo",
                      "choose an empty or new directory")
    refusal(runner.invoke(cli, SMALL + ["--out", str(users), "--resume"]), "choose an empty or new directory")
    source = tmp_path / "source"
    source.mkdir()
    refusal(runner.invoke(cli, ["zoo", "merge", str(source), "--out", str(users)]), "choose an empty or new directory")
    refusal(runner.invoke(cli, ["zoo", "import-paper", str(source), str(users), "--task", "formal_languages"]),
            "choose an empty or new directory")
    assert tree(users) == before, message  # nothing written, nothing deleted

    # an empty directory (hidden files aside) is fine: wspace marks it, the dotfile stays
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".keep").write_text("mine")
    done = runner.invoke(cli, SMALL + ["--steps", "2", "--num-models", "2", "--chunk-size", "2", "--out", str(empty)])
    assert done.exit_code == 0, done.output
    assert (empty / ".wspace-zoo").is_file() and (empty / ".keep").read_text() == "mine"


def test_a_zoo_from_before_markers_still_resumes(tmp_path, partial_zoo):
    path = copy_of(partial_zoo, tmp_path / "zoo")
    (path / ".wspace-zoo").unlink()
    done = CliRunner().invoke(cli, SMALL + ["--out", str(path), "--resume"])
    assert done.exit_code == 0, done.output
    assert (path / ".wspace-zoo").is_file() and Zoo.open(path).num_models == 4


def test_links_leaving_the_zoo_are_refused_not_followed(tmp_path, partial_zoo):
    """Issue #11.3: with ZOO/chunks a symbolic link, --resume deleted .tmp-* folders in its target
    and wrote chunks outside the zoo."""
    path = copy_of(partial_zoo, tmp_path / "zoo")
    elsewhere = tmp_path / "elsewhere"
    (path / CHUNKS_DIR).rename(elsewhere)
    (elsewhere / ".tmp-chunk-00001-0123456789ab").mkdir()
    (elsewhere / ".tmp-chunk-00001-0123456789ab" / "precious.txt").write_text("not the zoo's")
    (path / CHUNKS_DIR).symlink_to(elsewhere, target_is_directory=True)
    before_outside, before_zoo = tree(elsewhere), tree(path)
    runner = CliRunner()
    for command in (SMALL + ["--out", str(path), "--resume"], ["zoo", "info", str(path)],
                    ["zoo", "merge", str(path), "--out", str(path)]):
        refusal(runner.invoke(cli, command), f"{path / CHUNKS_DIR} is a symbolic link leading outside the zoo",
                "never follows links out of a zoo")
    assert tree(elsewhere) == before_outside and tree(path) == before_zoo

    # a committed chunk that links out, and a complete zoo's array that links out
    (path / CHUNKS_DIR).unlink()
    (path / CHUNKS_DIR).mkdir()
    (path / CHUNKS_DIR / "chunk-00000").symlink_to(elsewhere / "chunk-00000", target_is_directory=True)
    refusal(runner.invoke(cli, ["zoo", "info", str(path)]), "chunk-00000 is a symbolic link leading outside")
    complete = tmp_path / "complete"
    assert runner.invoke(cli, SMALL + ["--steps", "2", "--num-models", "2", "--out", str(complete)]).exit_code == 0
    (complete / "weights.npy").rename(tmp_path / "weights.npy")
    (complete / "weights.npy").symlink_to(tmp_path / "weights.npy")
    refusal(runner.invoke(cli, ["zoo", "verify", str(complete)]), "weights.npy is a symbolic link leading outside")
    # a link that stays inside the zoo is followed
    (complete / "weights.npy").unlink()
    (complete / "data").mkdir()
    (tmp_path / "weights.npy").rename(complete / "data" / "weights.npy")
    (complete / "weights.npy").symlink_to(complete / "data" / "weights.npy")
    assert runner.invoke(cli, ["zoo", "verify", str(complete)]).exit_code == 0


#: holds a zoo's lock as a builder in another PID namespace would: the OS file lock held, the pid
#: recorded one that this machine's process list does not have
FOREIGN_HOLDER = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": int(sys.argv[2]), "host": socket.gethostname(), "lock": "flock",
                         "since": "2024-01-01T00:00:00+00:00", "token": "container"}).encode())
print("locked", flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="OS file locks via fcntl")
def test_lock_of_a_live_builder_in_another_pid_namespace_is_not_taken(tmp_path):
    """Issue #11.4: a lock written from another PID namespace on the same host was judged stale
    (its pid is not ours to see) and taken, and the takeover removed that builder's temp chunks."""
    from wspace.zoo.directory import claim

    path = tmp_path / "zoo"
    claim(path)
    live_temp = path / CHUNKS_DIR / ".tmp-chunk-00000-0123456789ab"
    live_temp.mkdir(parents=True)
    (live_temp / "weights.npy").write_bytes(b"being written by the live builder")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = subprocess.Popen([sys.executable, "-c", FOREIGN_HOLDER, str(path / LOCK_NAME), str(gone.pid)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--resume"]):
            result = run_cli(SMALL + ["--out", str(path)] + extra)
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
            assert f"zoo {path} is being built by pid {gone.pid} on {socket.gethostname()}" in result.stderr
            assert "wait for it to finish" in result.stderr and "another container or PID namespace" in result.stderr
            assert "--out" not in result.stderr  # the message fits `wspace run` as well (issue #11.12)
        assert live_temp.is_dir() and (live_temp / "weights.npy").exists()
        assert lock_holder(path)["token"] == "container"
    finally:
        holder.kill()
        holder.wait()
    # its holder gone, the OS lock went with it: the lock is stale and taken over at once
    done = run_cli(SMALL + ["--out", str(path)])
    assert done.returncode == 0, done.stderr
    assert f"taking over the stale lock of pid {gone.pid}" in done.stderr
    assert not (path / LOCK_NAME).exists() and not live_temp.exists()


def test_zoo_info_tells_a_live_foreign_lock_from_a_dead_one(tmp_path, partial_zoo):
    path = copy_of(partial_zoo, tmp_path / "zoo")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = subprocess.Popen([sys.executable, "-c", FOREIGN_HOLDER, str(path / LOCK_NAME), str(gone.pid)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        info = json.loads(CliRunner().invoke(cli, ["zoo", "info", str(path), "--json"]).stdout)
        assert [(lock["pid"], lock["alive"]) for lock in info["locks"]] == [(gone.pid, True)]
    finally:
        holder.kill()
        holder.wait()
    info = json.loads(CliRunner().invoke(cli, ["zoo", "info", str(path), "--json"]).stdout)
    assert [(lock["pid"], lock["alive"]) for lock in info["locks"]] == [(gone.pid, False)]


def _failing(real, errno_: int, after: int = 0):
    """``real``, failing with OSError ``errno_`` from its ``after``-th call on."""
    calls = []

    def wrapper(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > after:
            raise OSError(errno_, os.strerror(errno_), str(path))
        return real(path, *args, **kwargs)
    return wrapper


def test_disk_full_during_a_build_is_a_clear_error_and_resumes(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "zoo"
    # the disk fills up while the second chunk is written (a chunk writes 4 arrays)
    monkeypatch.setattr(store_module, "save_npy", _failing(store_module.save_npy, errno.ENOSPC, after=5))
    result = CliRunner().invoke(cli, SMALL + ["--out", str(path)])
    message = refusal(result, "there is no space left on the device holding",
                      "free space there", "--resume")
    assert "No space left on device" in message
    monkeypatch.undo()
    assert set(chunk_dirs(path)) == {0} and not temp_chunks(path)  # the failed commit left nothing
    assert json.loads((path / MANIFEST_NAME).read_text())["status"] == "building"
    assert not (path / LOCK_NAME).exists()
    done = CliRunner().invoke(cli, SMALL + ["--out", str(path), "--resume"])
    assert done.exit_code == 0, done.output
    assert Zoo.open(path).num_models == 4


def test_read_only_out_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_mkdir, real_open = os.mkdir, os.open

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(read_only)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    runner = CliRunner()
    refusal(runner.invoke(cli, SMALL + ["--out", str(read_only / "zoo")]),
            f"{read_only / 'zoo'} is on a read-only filesystem", "choose a directory on a writable disk")
    monkeypatch.undo()

    # an existing empty directory on a read-only disk: the marker cannot be written
    def ro_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(read_only)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)
    refusal(runner.invoke(cli, SMALL + ["--out", str(read_only)]), "is on a read-only filesystem",
            "choose a directory on a writable disk")
    assert list(read_only.iterdir()) == []


def test_manifest_that_is_a_directory_is_a_clear_error(tmp_path, partial_zoo):
    path = copy_of(partial_zoo, tmp_path / "zoo")
    (path / MANIFEST_NAME).unlink()
    (path / MANIFEST_NAME).mkdir()
    before = tree(path)
    runner = CliRunner()
    for command in (["zoo", "info", str(path)], ["zoo", "verify", str(path)],
                    SMALL + ["--out", str(path), "--resume"], ["zoo", "merge", str(path), "--out", str(tmp_path / "m")]):
        refusal(runner.invoke(cli, command), f"{path / MANIFEST_NAME} is a directory where the zoo needs a file",
                "move that directory away")
    assert tree(path) == before


@pytest.mark.skipif(sys.platform == "win32", reason="OS file locks via fcntl")
def test_wspace_run_does_not_announce_resuming_a_zoo_another_builder_holds(tmp_path):
    """Issue #11.12: a second concurrent `wspace run` said "resuming the interrupted zoo build"
    before the lock refused it; it now only names the live builder."""
    from wspace.config import RunConfig
    from wspace.experiment.zoos import ensure_zoo, zoo_config_for, zoo_path_for
    from wspace.zoo.build import build_zoo
    from wspace.zoo.lock import ZooLockedError

    config = RunConfig(preset="smoke", out_dir=str(tmp_path))
    path = zoo_path_for(config)

    def stop(progress):
        if progress.chunks_done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # an interrupted build: a manifest that is not complete
        build_zoo(attrs.evolve(zoo_config_for(config), chunk_size=4), path, progress=stop, workers=1)
    holder = subprocess.Popen([sys.executable, "-c", FOREIGN_HOLDER, str(path / LOCK_NAME), str(os.getpid())],
                              stdout=subprocess.PIPE, text=True)
    said = []
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ZooLockedError, match="is being built by pid"):
            ensure_zoo(config, said.append)
    finally:
        holder.kill()
        holder.wait()
    assert not [line for line in said if "resuming" in line], said
    said.clear()
    ensure_zoo(config, said.append)  # the holder gone: now it resumes, and says so
    assert any("resuming the interrupted zoo build" in line for line in said), said
