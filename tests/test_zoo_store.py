"""The durable zoo store: atomic chunk commits, crash-safe resume and finalize, the lock, file
checks, shard merging, zoo_info and the `wspace zoo` commands. Arrays are written directly (no
task family or training), so these tests need no plugin beyond the bundled LSTM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wspace.cli import cli
from wspace_core.registry import WspaceError
from wspace.zoo import Zoo, ZooLockedError, ZooWriter, merge_zoos, zoo_info
from wspace.zoo import store as store_module
from wspace.zoo.chunks import CHUNKS_DIR, chunk_dirs
from wspace.zoo.lock import LOCK_NAME
from wspace.zoo.manifest import CHECKSUM_KEY, MANIFEST_NAME, manifest_checksum

STEPS = [0, 10, 20]
S = len(STEPS)
P, N, T, O = 7, 4, 5, 6
COLUMNS = ["model", "snapshot", "step", "split", "mb", "performance"]


def make_base(num_models: int = 5, chunk_size: int = 2, seed: int = 0, arch: dict | None = None) -> dict:
    return {
        "architecture": arch or {"name": "fake_arch", "sizes": {"hidden_size": 3}, "layout": []},
        "task": {"name": "fake_task", "settings": {"k": 1}, "metric_columns": ["performance"]},
        "build": {"num_models": num_models, "chunk_size": chunk_size, "seed": seed, "device": "cpu"},
        "snapshot_steps": STEPS, "num_models": num_models, "rows_per_model": S,
        "metadata_columns": COLUMNS,
    }


def make_chunk(chunk_id: int, num_models: int = 5, chunk_size: int = 2, params: int = P) -> dict:
    """Random arrays of one chunk, deterministic in the chunk id."""
    rng = np.random.default_rng(1000 + chunk_id)
    models = np.arange(chunk_id * chunk_size, min((chunk_id + 1) * chunk_size, num_models))
    R = len(models) * S
    metadata = np.stack([np.repeat(models, S), np.tile(np.arange(S), len(models)), np.tile(STEPS, len(models)),
                         np.repeat(models % 3, S), np.repeat(models % 4, S), rng.random(R)], axis=1)
    return {"weights": rng.standard_normal((R, params)), "rollout_inputs": rng.integers(0, O, (R, N, T)),
            "rollout_outputs": rng.standard_normal((R, N, T, O)), "metadata": metadata}


def write_zoo(path: Path, num_models: int = 5, chunk_size: int = 2, order=None) -> Zoo:
    with ZooWriter.create(path, make_base(num_models, chunk_size)) as writer:
        for c in order if order is not None else writer.pending_chunks():
            writer.commit_chunk(c, make_chunk(c, num_models, chunk_size))
        return writer.finalize()


def checksums(path: Path) -> dict[str, str]:
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    return {name: entry["sha256"] for name, entry in manifest["arrays"].items()}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(path: Path, pid: int, host: str | None = None) -> None:
    (path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                              "since": "2024-01-01T00:00:00+00:00"}))


def die_holding_the_lock(writer: ZooWriter) -> None:
    """What a killed writer leaves: its lock file stays, its OS file lock goes with the process."""
    lock = writer._lock
    if getattr(lock, "_fd", None) is not None:
        os.close(lock._fd)
        lock._fd = None
    lock.held = False


def edit_manifest(path: Path, edit, reseal: bool = True) -> None:
    """Edit the manifest; ``reseal``: recompute its own checksum, as a careful forger would (so the
    later checks are what is tested)."""
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    edit(manifest)
    if reseal:
        manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.fixture
def zoo_dir(tmp_path) -> Path:
    write_zoo(tmp_path / "zoo")
    return tmp_path / "zoo"


# ---- round trip and determinism ----------------------------------------------------------------

def test_round_trip(tmp_path):
    zoo = write_zoo(tmp_path / "zoo")
    expected = [make_chunk(c) for c in range(3)]
    for name in ("weights", "rollout_inputs", "rollout_outputs", "metadata"):
        want = np.concatenate([e[name] for e in expected])
        got = zoo._arrays[name]
        assert isinstance(got, np.memmap)
        dtype = {"weights": np.float32, "rollout_inputs": np.int16, "rollout_outputs": np.float16,
                 "metadata": np.float64}[name]
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want.astype(dtype))
    assert (zoo.num_models, zoo.num_rows, zoo.snapshot_steps) == (5, 15, STEPS)
    np.testing.assert_array_equal(zoo.metadata["model"], np.repeat(np.arange(5), S))
    # rows(): split 0 is models 0 and 3; snapshot -1 is the last
    np.testing.assert_array_equal(zoo.rows(split="train", snapshot=-1), [2, 11])
    np.testing.assert_array_equal(zoo.rows(snapshot=0), np.arange(5) * S)
    with pytest.raises(WspaceError, match="unknown split 'test'"):
        zoo.rows(split="test")
    with pytest.raises(WspaceError, match="out of range"):
        zoo.rows(snapshot=3)
    # readable without wspace: plain JSON + .npy that numpy opens without pickling
    manifest = json.loads((tmp_path / "zoo" / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete" and manifest["format_version"] == 1
    raw = np.load(tmp_path / "zoo" / manifest["arrays"]["weights"]["file"], mmap_mode="r", allow_pickle=False)
    assert raw.shape == (15, P)
    assert not (tmp_path / "zoo" / CHUNKS_DIR).exists()
    assert not (tmp_path / "zoo" / LOCK_NAME).exists()


def test_same_build_twice_is_byte_identical_whatever_the_commit_order(tmp_path):
    write_zoo(tmp_path / "a")
    write_zoo(tmp_path / "b", order=[2, 0, 1])
    assert checksums(tmp_path / "a") == checksums(tmp_path / "b")
    for name in ("weights", "rollout_inputs", "rollout_outputs", "metadata"):
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == (tmp_path / "b" / f"{name}.npy").read_bytes()


def test_commit_checks_the_rows(tmp_path):
    with ZooWriter.create(tmp_path / "zoo", make_base()) as writer:
        bad = make_chunk(0)
        bad["metadata"][:, 0] = 7  # wrong model indices
        with pytest.raises(WspaceError, match="metadata column 'model'"):
            writer.commit_chunk(0, bad)
        with pytest.raises(WspaceError, match="expected 6 rows"):
            writer.commit_chunk(0, {**make_chunk(0), "weights": np.zeros((5, P))})
        with pytest.raises(WspaceError, match="object array"):
            writer.commit_chunk(0, {**make_chunk(0), "weights": np.array([[object()]] * 6)})
        with pytest.raises(WspaceError, match="out of range"):
            writer.commit_chunk(3, make_chunk(0))
        writer.commit_chunk(0, make_chunk(0))
        with pytest.raises(WspaceError, match="already committed"):
            writer.commit_chunk(0, make_chunk(0))
        with pytest.raises(WspaceError, match="row shape"):
            writer.commit_chunk(1, make_chunk(1, params=P + 1))
        with pytest.raises(WspaceError, match="2 of 3 chunks are not committed"):
            writer.finalize()
    assert chunk_dirs(tmp_path / "zoo").keys() == {0}


# ---- crashes and resume ------------------------------------------------------------------------

def test_resume_after_a_crash_keeps_committed_chunks(tmp_path):
    path = tmp_path / "zoo"
    writer = ZooWriter.create(path, make_base())
    writer.commit_chunk(0, make_chunk(0))
    # the process dies while writing chunk 1: a half-written temp dir and its lock stay behind
    half = path / CHUNKS_DIR / ".tmp-chunk-00001-deadbeef"
    half.mkdir()
    (half / "weights.npy").write_bytes(b"\x93NUMPY half")
    (path / ".weights.npy.tmp-cafe").write_bytes(b"partial final array")
    die_holding_the_lock(writer)  # the dead process never releases its lock...
    write_lock(path, dead_pid())  # ...which names a pid that is gone

    with pytest.warns(UserWarning, match="stale lock"):
        resumed = ZooWriter.create(path, make_base(), resume=True)
    with resumed:
        assert resumed.committed_chunks() == {0}
        assert resumed.pending_chunks() == [1, 2]
        assert not half.exists() and not (path / ".weights.npy.tmp-cafe").exists()
        for c in resumed.pending_chunks():
            resumed.commit_chunk(c, make_chunk(c))
        with pytest.raises(ZooLockedError):
            ZooWriter.create(path, make_base(), resume=True)
        resumed.finalize()
    write_zoo(tmp_path / "reference")
    assert checksums(path) == checksums(tmp_path / "reference")


KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import test_zoo_store as t
from wspace.zoo import ZooWriter, files, store

writer = ZooWriter.create({path!r}, t.make_base())
writer.commit_chunk(0, t.make_chunk(0))
real = files.save_npy
def dying_save(path, array):
    entry = real(path, array)
    os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of committing chunk 1
store.save_npy = dying_save
writer.commit_chunk(1, t.make_chunk(1))
"""


def test_killed_process_resumes(tmp_path):
    path = tmp_path / "zoo"
    code = KILLED_WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert (path / LOCK_NAME).exists() and any(p.name.startswith(".tmp-") for p in (path / CHUNKS_DIR).iterdir())
    dead = json.loads((path / LOCK_NAME).read_text())["pid"]
    with pytest.warns(UserWarning, match=f"stale lock of pid {dead} "):
        writer = ZooWriter.create(path, make_base(), resume=True)
    with writer:
        assert writer.pending_chunks() == [1, 2]
        for c in writer.pending_chunks():
            writer.commit_chunk(c, make_chunk(c))
        writer.finalize()
    write_zoo(tmp_path / "reference")
    assert checksums(path) == checksums(tmp_path / "reference")


@pytest.mark.parametrize("crash_at", ["consolidate", "manifest", "cleanup"])
def test_finalize_killed_anywhere_recovers(tmp_path, monkeypatch, crash_at):
    path = tmp_path / "zoo"
    writer = ZooWriter.create(path, make_base())
    for c in range(3):
        writer.commit_chunk(c, make_chunk(c))
    real = {"consolidate": store_module._consolidate, "manifest": store_module.write_manifest,
            "cleanup": store_module._remove_tree}
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 or crash_at != "consolidate":
            raise KeyboardInterrupt  # stands for a kill at that point
        return real[crash_at](*args, **kwargs)

    target = {"consolidate": "_consolidate", "manifest": "write_manifest", "cleanup": "_remove_tree"}[crash_at]
    monkeypatch.setattr(store_module, target, crash)
    with pytest.raises(KeyboardInterrupt):
        writer.finalize()
    monkeypatch.undo()
    writer.close()
    status = json.loads((path / MANIFEST_NAME).read_text())["status"]
    assert status == ("complete" if crash_at == "cleanup" else "building")
    assert len(chunk_dirs(path)) == 3  # nothing committed was lost
    with ZooWriter.create(path, make_base(), resume=True) as again:
        zoo = again.finalize()
    assert zoo.num_rows == 15 and not (path / CHUNKS_DIR).exists()
    write_zoo(tmp_path / "reference")
    assert checksums(path) == checksums(tmp_path / "reference")
    Zoo.open(path, verify=True)


def test_partial_zoo_needs_resume_and_the_same_settings(tmp_path):
    path = tmp_path / "zoo"
    with ZooWriter.create(path, make_base()) as writer:
        writer.commit_chunk(0, make_chunk(0))
    with pytest.raises(WspaceError, match=r"partial zoo \(1 of 3 chunks committed\); rerun with --resume"):
        ZooWriter.create(path, make_base(), resume=False)
    with pytest.raises(WspaceError, match="different settings .*differing: build.seed"):
        ZooWriter.create(path, make_base(seed=1), resume=True)
    # a different device is not a different build
    other_device = {**make_base(), "build": {**make_base()["build"], "device": "cuda"}}
    with ZooWriter.create(path, other_device, resume=True) as writer:
        assert writer.committed_chunks() == {0}


def test_existing_zoo_or_foreign_directory_refused(tmp_path, zoo_dir):
    with pytest.raises(WspaceError, match="already holds a complete zoo"):
        ZooWriter.create(zoo_dir, make_base())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WspaceError, match="not a wspace zoo"):
        ZooWriter.create(foreign, make_base())
    # resuming a complete zoo is a no-op that returns it
    with ZooWriter.create(zoo_dir, make_base(), resume=True) as writer:
        assert writer.pending_chunks() == []
        assert writer.finalize().num_rows == 15


# ---- the lock ----------------------------------------------------------------------------------

def test_second_writer_refused_while_the_first_runs(tmp_path):
    path = tmp_path / "zoo"
    with ZooWriter.create(path, make_base()):
        with pytest.raises(ZooLockedError, match=rf"zoo .* is being built by pid {os.getpid()} on "
                                                 rf"{socket.gethostname()} since .*; wait for it"):
            ZooWriter.create(path, make_base(), resume=True)
    with ZooWriter.create(path, make_base(), resume=True) as writer:  # released: free again
        assert writer.committed_chunks() == set()


def test_stale_lock_taken_over_and_foreign_host_lock_refused(tmp_path):
    path = tmp_path / "zoo"
    path.mkdir()
    write_lock(path, dead_pid())
    with pytest.warns(UserWarning, match="taking over the stale lock of pid"):
        writer = ZooWriter.create(path, make_base())
    holder = json.loads((path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid()
    writer.close()
    assert not (path / LOCK_NAME).exists()
    write_lock(path, 1, host="some-other-machine")
    with pytest.raises(ZooLockedError, match=f"delete {path / LOCK_NAME}"):
        ZooWriter.create(path, make_base(), resume=True)


def test_lock_message_names_the_zoo_not_an_option(tmp_path):
    """The refusal fits every command that opens a zoo for writing (`wspace run` has no --out)."""
    path = tmp_path / "zoo"
    with ZooWriter.create(path, make_base()):
        with pytest.raises(ZooLockedError) as refused:
            ZooWriter.create(path, make_base(), resume=True)
    message = str(refused.value)
    assert "--out" not in message and f"another build holds the lock {path / LOCK_NAME}" in message
    assert f"stop it (kill {os.getpid()})" in message


def test_empty_lock_of_a_dead_builder_is_taken_at_once(tmp_path):
    """The OS file lock tells a dead writer from one still writing its lock: no grace period."""
    path = tmp_path / "zoo"
    writer = ZooWriter.create(path, make_base())
    writer.commit_chunk(0, make_chunk(0))
    die_holding_the_lock(writer)
    (path / LOCK_NAME).write_text("")
    with ZooWriter.create(path, make_base(), resume=True) as again:
        assert again.committed_chunks() == {0}


def test_lock_held_but_not_yet_written_is_refused(tmp_path):
    """A writer between taking the file lock and writing who it is: refused, never taken over."""
    import fcntl

    path = tmp_path / "zoo"
    ZooWriter.create(path, make_base()).close()
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts like another process
        with pytest.raises(ZooLockedError, match="is being locked by another process right now"):
            ZooWriter.create(path, make_base(), resume=True)
        assert (path / LOCK_NAME).read_text() == ""
    finally:
        os.close(fd)


def test_without_os_file_locks_the_pid_rule_holds(tmp_path, monkeypatch):
    from wspace.zoo import lock as lock_module

    monkeypatch.setattr(lock_module, "fcntl", None)
    path = tmp_path / "zoo"
    with ZooWriter.create(path, make_base()):
        assert "lock" not in json.loads((path / LOCK_NAME).read_text())
        with pytest.raises(ZooLockedError, match=rf"is being built by pid {os.getpid()} .*; wait for it"):
            ZooWriter.create(path, make_base(), resume=True)
    assert not (path / LOCK_NAME).exists()
    write_lock(path, dead_pid())
    with pytest.warns(UserWarning, match="taking over the stale lock of pid"):
        ZooWriter.create(path, make_base(), resume=True).close()
    (path / LOCK_NAME).write_text("")  # a writer may be between creating and writing it
    with pytest.raises(ZooLockedError, match="still empty"):
        ZooWriter.create(path, make_base(), resume=True)


def test_filesystem_without_file_locks_uses_the_pid_rule(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_file_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_file_locks)
    path = tmp_path / "zoo"
    with ZooWriter.create(path, make_base()):
        assert "lock" not in json.loads((path / LOCK_NAME).read_text())  # judged by its pid
        with pytest.raises(ZooLockedError, match=rf"is being built by pid {os.getpid()} .*; wait for it"):
            ZooWriter.create(path, make_base(), resume=True)
    write_lock(path, dead_pid())
    with pytest.warns(UserWarning, match="taking over the stale lock of pid"):
        ZooWriter.create(path, make_base(), resume=True).close()
    assert not (path / LOCK_NAME).exists()


# ---- damaged and hostile files -----------------------------------------------------------------

def test_truncated_file_refused_naming_it(zoo_dir):
    path = zoo_dir / "rollout_outputs.npy"
    path.write_bytes(path.read_bytes()[:-10])
    for verify in (True, False):
        with pytest.raises(WspaceError, match=r"rollout_outputs\.npy .*truncated.*[Rr]e-copy"):
            Zoo.open(zoo_dir, verify=verify)


def test_bit_flip_refused_naming_the_file(zoo_dir):
    path = zoo_dir / "weights.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(WspaceError, match=r"weights\.npy does not match the checksum.*rebuild"):
        Zoo.open(zoo_dir)
    assert Zoo.open(zoo_dir, verify=False).num_rows == 15  # sizes still fine: only the hash tells


def test_newer_format_version_refused(zoo_dir):
    edit_manifest(zoo_dir, lambda m: m.update(format_version=2))
    with pytest.raises(WspaceError, match="format version 2.*upgrade wspace"):
        Zoo.open(zoo_dir)


@pytest.mark.parametrize("bad", ["../weights.npy", "/etc/passwd", "sub/weights.npy", ".."])
def test_paths_outside_the_zoo_refused(zoo_dir, bad):
    edit_manifest(zoo_dir, lambda m: m["arrays"]["weights"].update(file=bad))
    with pytest.raises(WspaceError, match="not a plain file name inside the zoo"):
        Zoo.open(zoo_dir)
    with pytest.raises(WspaceError, match="not a plain file name"):
        zoo_info(zoo_dir)


def test_pickled_object_array_refused(zoo_dir):
    path = zoo_dir / "metadata.npy"
    hostile = np.empty((15, len(COLUMNS)), dtype=object)
    np.save(path, hostile, allow_pickle=True)
    from wspace.zoo.files import sha256_file

    edit_manifest(zoo_dir, lambda m: m["arrays"]["metadata"].update(
        dtype="|O", sha256=sha256_file(path), bytes=path.stat().st_size))
    with pytest.raises(WspaceError, match=r"metadata\.npy holds a Python-object \(pickled\) array"):
        Zoo.open(zoo_dir)


def test_manifest_checks(tmp_path, zoo_dir):
    with pytest.raises(WspaceError, match="holds 'fake_arch' networks, but 'lstm' was expected"):
        Zoo.open(zoo_dir, expect_arch="lstm")
    with pytest.raises(WspaceError, match="no manifest.json"):
        Zoo.open(tmp_path)
    edit_manifest(zoo_dir, lambda m: m["arrays"]["weights"].update(shape=[15, P + 1]))
    with pytest.raises(WspaceError, match=r"weights\.npy holds shape .* manifest says"):
        Zoo.open(zoo_dir)
    edit_manifest(zoo_dir, lambda m: m["build"].update(seed=5))
    with pytest.raises(WspaceError, match="fingerprint does not match"):
        Zoo.open(zoo_dir)
    (zoo_dir / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(WspaceError, match="not valid JSON"):
        Zoo.open(zoo_dir)


def test_building_zoo_cannot_be_opened(tmp_path):
    with ZooWriter.create(tmp_path / "zoo", make_base()) as writer:
        writer.commit_chunk(1, make_chunk(1))
    with pytest.raises(WspaceError, match=r"still being built \(1 of 3 chunks committed\).*--resume"):
        Zoo.open(tmp_path / "zoo")


# ---- shards and merging ------------------------------------------------------------------------

def build_shard(path: Path, rank: int, world: int, num_models: int = 5, chunk_size: int = 2,
                only: list[int] | None = None) -> None:
    with ZooWriter.create(path, make_base(num_models, chunk_size), shard=(rank, world)) as writer:
        for c in writer.pending_chunks() if only is None else only:
            writer.commit_chunk(c, make_chunk(c, num_models, chunk_size))
        if world > 1:
            with pytest.raises(WspaceError, match=f"shard {rank} of {world}.*wspace zoo merge"):
                writer.finalize()


def test_merge_of_shards_equals_a_single_build(tmp_path):
    write_zoo(tmp_path / "single")
    build_shard(tmp_path / "rank0", 0, 2)
    build_shard(tmp_path / "rank1", 1, 2)
    assert chunk_dirs(tmp_path / "rank0").keys() == {0, 2}
    merged = merge_zoos([tmp_path / "rank0", tmp_path / "rank1"], tmp_path / "merged")
    assert merged.num_rows == 15
    assert checksums(tmp_path / "merged") == checksums(tmp_path / "single")
    # in place, into one of the shards (a shared filesystem)
    merge_zoos([tmp_path / "rank1", tmp_path / "rank0"], tmp_path / "rank0")
    assert checksums(tmp_path / "rank0") == checksums(tmp_path / "single")


def test_ranks_sharing_one_directory(tmp_path):
    """Ranks of a multi-machine build write one directory on a shared filesystem: each holds its
    own rank lock; the main writer (finalize, merge) waits until no rank is live."""
    path = tmp_path / "shared"
    rank0 = ZooWriter.create(path, make_base(), shard=(0, 2))
    rank1 = ZooWriter.create(path, make_base(), shard=(1, 2))  # joins without --resume
    with pytest.raises(ZooLockedError, match=r"\(rank0of2\) by pid"):
        ZooWriter.create(path, make_base(), shard=(0, 2), resume=True)  # the same rank twice
    with pytest.raises(ZooLockedError, match="conflicting writer"):
        merge_zoos([path], path)  # the main writer refuses while ranks are live
    with pytest.raises(ZooLockedError, match="conflicting writer"):
        ZooWriter.create(path, make_base(), shard=(0, 4), resume=True)  # another world size
    for writer in (rank1, rank0):
        for c in writer.pending_chunks():
            writer.commit_chunk(c, make_chunk(c))
    assert rank0.pending_chunks() == [] and rank1.committed_chunks() == {0, 1, 2}
    rank0.close()
    die_holding_the_lock(rank1)  # rank 1 dies without releasing: its lock is stale...
    (path / "build.rank1of2.lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match="stale lock"):
        merged = merge_zoos([path], path)  # ...and is taken away
    write_zoo(tmp_path / "single")
    assert checksums(path) == checksums(tmp_path / "single") and merged.num_rows == 15
    assert [p.name for p in path.iterdir() if p.name.endswith(".lock")] == []


def test_merge_refuses_other_builds_overlaps_and_reports_gaps(tmp_path):
    build_shard(tmp_path / "rank0", 0, 2)
    with ZooWriter.create(tmp_path / "other", {**make_base(), "build": {**make_base()["build"], "seed": 9}}) as w:
        w.commit_chunk(1, make_chunk(1))
    with pytest.raises(WspaceError, match="come from different builds.*build.seed"):
        merge_zoos([tmp_path / "rank0", tmp_path / "other"], tmp_path / "out")
    build_shard(tmp_path / "overlap", 0, 1, only=[1, 2])
    with pytest.raises(WspaceError, match=r"both hold chunk 2 \(models 4..4\)"):
        merge_zoos([tmp_path / "rank0", tmp_path / "overlap"], tmp_path / "out")
    with pytest.raises(WspaceError, match=r"merged 2 of 3 chunks.*chunks 1 are in none"):
        merge_zoos([tmp_path / "rank0"], tmp_path / "out")
    assert zoo_info(tmp_path / "out")["chunks"]["committed"] == 2  # kept: merge again later
    build_shard(tmp_path / "rank1", 1, 2)
    merge_zoos([tmp_path / "rank0", tmp_path / "rank1"], tmp_path / "out")
    write_zoo(tmp_path / "single")
    assert checksums(tmp_path / "out") == checksums(tmp_path / "single")


def test_merge_refuses_a_damaged_chunk(tmp_path):
    build_shard(tmp_path / "rank0", 0, 2)
    build_shard(tmp_path / "rank1", 1, 2)
    victim = chunk_dirs(tmp_path / "rank1")[1] / "rollout_inputs.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(WspaceError, match=r"rollout_inputs\.npy does not match its checksum"):
        merge_zoos([tmp_path / "rank0", tmp_path / "rank1"], tmp_path / "out")


# ---- zoo_info and the CLI ----------------------------------------------------------------------

def test_zoo_info_building_and_complete(tmp_path):
    path = tmp_path / "zoo"
    with ZooWriter.create(path, make_base()) as writer:
        writer.commit_chunk(0, make_chunk(0))
        writer.commit_chunk(2, make_chunk(2))
        info = zoo_info(path)
        assert [(lock["file"], lock["alive"]) for lock in info["locks"]] == [(LOCK_NAME, True)]
    assert info["status"] == "building"
    assert info["chunks"] == {"committed": 2, "total": 3, "chunk_size": 2}
    assert info["committed_chunk_ids"] == "0, 2"
    assert info["models"] == {"done": 3, "total": 5}
    assert info["splits"] == {"train": 1, "validation": 2, "ood": 0}  # models 0, 1, 4: splits 0, 1, 1
    assert info["sizes"]["rows"] == 9 and info["sizes"]["params_per_network"] == P
    perf = info["performance"]["by_split"]["all"]
    chunks = np.concatenate([make_chunk(0)["metadata"], make_chunk(2)["metadata"]])
    last = chunks[chunks[:, 1] == 2, -1]
    assert perf[2]["step"] == 20 and perf[2]["count"] == 3
    assert perf[2]["mean"] == pytest.approx(last.mean()) and perf[2]["max"] == pytest.approx(last.max())

    with ZooWriter.create(path, make_base(), resume=True) as writer:
        writer.commit_chunk(1, make_chunk(1))
        writer.finalize()
    info = zoo_info(path)
    assert info["status"] == "complete" and info["models"]["done"] == 5 and info["locks"] == []
    assert info["splits"] == {"train": 2, "validation": 2, "ood": 1}
    assert info["sizes"]["bytes_on_disk"] > 15 * P * 4
    assert set(info["performance"]["by_split"]) == {"all", "train", "validation", "ood"}


def test_cli_zoo_info(tmp_path, zoo_dir):
    runner = CliRunner()
    result = runner.invoke(cli, ["zoo", "info", str(zoo_dir)])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "5 of 5" in result.output and "performance per snapshot" in result.output
    result = runner.invoke(cli, ["zoo", "info", str(zoo_dir), "--json"])
    assert json.loads(result.output)["sizes"]["rows"] == 15
    result = runner.invoke(cli, ["zoo", "verify", str(zoo_dir)])
    assert result.exit_code == 0 and "ok:" in result.output
    result = runner.invoke(cli, ["zoo", "info", str(tmp_path)])
    assert result.exit_code == 1 and "is not a wspace zoo" in result.output and "Traceback" not in result.output


def test_cli_merge(tmp_path):
    build_shard(tmp_path / "rank0", 0, 2)
    build_shard(tmp_path / "rank1", 1, 2)
    result = CliRunner().invoke(cli, ["zoo", "merge", str(tmp_path / "rank0"), str(tmp_path / "rank1"),
                                      "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert Zoo.open(tmp_path / "merged").num_models == 5


def fake_build_module(interrupt_after: int | None):
    """Stands in for wspace.zoo.build: commits chunks through the store, reports progress,
    and (optionally) gets a Ctrl-C after some chunks."""
    module = types.ModuleType("wspace.zoo.build")
    seen = {}

    def preset_config(task, preset, **overrides):
        seen.update(task=task, preset=preset, **overrides)
        return types.SimpleNamespace(num_models=5, chunk_size=2)

    def build_zoo_impl(config, out, resume=False, progress=None):
        with ZooWriter.create(out, make_base(), resume=resume) as writer:
            for c in writer.pending_chunks():
                if interrupt_after is not None and len(writer.committed_chunks()) == interrupt_after:
                    raise KeyboardInterrupt
                writer.commit_chunk(c, make_chunk(c))
                if progress:
                    done = len(writer.committed_chunks())
                    progress(types.SimpleNamespace(model_steps_done=done * 200, model_steps_total=600,
                                                   chunks_done=done, chunks_total=3, elapsed_s=float(done)))
            return writer.finalize()

    module.preset_config = preset_config
    module.build_zoo = build_zoo_impl
    return module, seen


def test_cli_build_ctrl_c_leaves_a_resumable_zoo(tmp_path, monkeypatch):
    out = tmp_path / "zoo"
    module, seen = fake_build_module(interrupt_after=1)
    monkeypatch.setitem(sys.modules, "wspace.zoo.build", module)
    import wspace.zoo as zoo_package

    monkeypatch.setattr(zoo_package, "build", module, raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["zoo", "build", "--task", "fake_task", "--preset", "smoke", "--out", str(out),
                                 "--num-models", "5", "--steps", "3"])
    assert result.exit_code == 130, result.output
    assert "interrupted: 1 of 3 chunks committed; rerun with --resume to finish" in result.output
    # --seed not given: the preset's (or a --config file's) seed, 0 unless one says otherwise
    assert seen == {"task": "fake_task", "preset": "smoke", "arch": "lstm", "num_models": 5, "steps": 3}
    assert zoo_info(out)["chunks"]["committed"] == 1

    module, _ = fake_build_module(interrupt_after=None)
    monkeypatch.setitem(sys.modules, "wspace.zoo.build", module)
    monkeypatch.setattr(zoo_package, "build", module, raising=False)
    result = runner.invoke(cli, ["zoo", "build", "--task", "fake_task", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "models/s" in result.output and "zoo complete" in result.output
    assert Zoo.open(out).num_models == 5


def test_architecture_from_the_manifest(tmp_path):
    from wspace_core import plugins
    from wspace_core.architecture import Sizes

    arch = plugins.architectures().get("lstm")(Sizes(6, 3, 6, 1))
    params = arch.layout.num_params
    described = arch.describe()
    with ZooWriter.create(tmp_path / "zoo", make_base(arch=described)) as writer:
        for c in range(3):
            writer.commit_chunk(c, make_chunk(c, params=params))
        zoo = writer.finalize()
    assert Zoo.open(tmp_path / "zoo", expect_arch="lstm").architecture().layout == arch.layout
    tampered = {**described, "layout": described["layout"][::-1]}
    with ZooWriter.create(tmp_path / "zoo2", make_base(arch=tampered)) as writer:
        for c in range(3):
            writer.commit_chunk(c, make_chunk(c, params=params))
        with pytest.raises(WspaceError, match="lays out parameters differently"):
            writer.finalize().architecture()
    assert zoo.num_models == 5
