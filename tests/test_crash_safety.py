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

import numpy as np
import pytest
from click.testing import CliRunner

from wspace_core.cli import cli
from wspace_core.zoo import Zoo
from wspace_core.zoo import store as store_module
from wspace_core.zoo.chunks import CHUNKS_DIR, TMP_PREFIX, chunk_dirs, read_chunk
from wspace_core.zoo.lock import LOCK_NAME
from wspace_core.zoo.manifest import ARRAY_NAMES, MANIFEST_NAME, chunk_models

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
from wspace_core.zoo import store

def slow(real):
    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        time.sleep({SLOW_IO_S})
        return out
    return wrapper

store.save_npy = slow(store.save_npy)
store._consolidate = slow(store._consolidate)
from wspace_core.cli import main
sys.argv[0] = "wspace"
main()
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def spawn(args: list[str], log: Path, slow_io: bool = False) -> subprocess.Popen:
    prefix = ["-c", SLOW_IO] if slow_io else ["-m", "wspace_core"]
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, *prefix, *args], stdout=f, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wspace_core", *args], capture_output=True, text=True,
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
        if (path / LOCK_NAME).exists() and lock_holder(path) is None:
            # killed between creating the lock file and writing it: the next builder cannot tell a
            # dead writer from a slow one and waits out the grace period (it says so), so do we
            time.sleep(max(0.0, (path / LOCK_NAME).stat().st_mtime + 31 - time.time()))
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

    from wspace_core.pretrain import load_checkpoint

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
