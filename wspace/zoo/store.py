"""The durable zoo store: a writer that commits chunks atomically and resumes after any crash,
and a reader that memory-maps a complete zoo after checking it.

On disk (manifest keys: see ``wspace.zoo.manifest``)::

    DIR/.wspace-zoo                    the marker: wspace made this directory a zoo (may write, clean)
    DIR/manifest.json                  plain JSON: what the zoo is, per-file sha256, status, own sha256
    DIR/weights.npy                    (R, P) float32, R = num_models * rows_per_model
    DIR/rollout_inputs.npy             (R, N, T) int16 tokens or (R, N, T, I) float16
    DIR/rollout_outputs.npy            (R, N, T, O) float16
    DIR/metadata.npy                   (R, C) float64, columns named by metadata_columns
    DIR/build.lock                     while a writer holds the zoo
    DIR/chunks/chunk-NNNNN/            while building: one committed directory per chunk

Rows are ordered (model, snapshot). Chunk k holds models [k*chunk_size, (k+1)*chunk_size).

Crash safety: a chunk is written under ``chunks/.tmp-*``, fsync'd, and renamed into place, so it
either exists whole or not at all; temp leftovers are removed when a writer opens the zoo.
``finalize`` writes the consolidated arrays under temp names, renames them into place, and only
then marks the manifest complete and removes ``chunks/``; killed anywhere, the next
``finalize`` (or ``--resume``) redoes it from the chunks, which are still there.

Boundaries (``wspace.zoo.directory``): a writer opens only a new or empty directory (which it
marks), a marked one, or one holding a zoo's manifest; it never follows a symbolic link out of the
zoo. Filesystem failures (a full disk, a read-only directory) become ``ZooFileError``s naming the
path and the fix; a failed commit leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS
from wspace.zoo.chunks import CHUNK_JSON, CHUNKS_DIR, TMP_PREFIX, chunk_dir_name, chunk_dirs, read_chunk
from wspace.zoo.content import check_arrays, check_metadata
from wspace.zoo.directory import check_claimable, claim, inside, is_marked
from wspace.files import fsync_dir
from wspace.zoo.files import check_npy, filesystem_errors, save_npy, sha256_file, safe_file_name
from wspace.zoo.info import zoo_info  # noqa: F401  (part of the store's public API)
from wspace.zoo.lock import LOCK_NAME, ZooLock, check_other_writers, rank_lock_name
from wspace.zoo.manifest import (ARRAY_NAMES, FORMAT, FORMAT_VERSION, MANIFEST_NAME, STORE_KEYS,
                                      check_base, chunk_models, chunk_size_of, diff_keys, fingerprint,
                                      num_chunks_of, read_manifest, write_manifest)

_TMP_CHUNK_RE = re.compile(re.escape(TMP_PREFIX) + r"chunk-(\d+)-")
#: keys of a builder's manifest that must agree when resuming or merging (beyond the fingerprint)
_LAYOUT_KEYS = ("num_models", "snapshot_steps", "rows_per_model", "metadata_columns")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(data: Any) -> Any:
    """JSON-normalise (tuples -> lists, numpy scalars -> numbers) so fingerprints are stable."""
    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"zoo manifest value {obj!r} ({type(obj).__name__}) is not plain data")
    try:
        return json.loads(json.dumps(data, default=default))
    except TypeError as err:
        raise WspaceError(str(err)) from None


def _numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise WspaceError(f"chunk array {name!r} is an object array; zoo arrays are numeric")
    return array


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


#: top-level temp files a dead writer may leave (written by ``write_json_atomic`` and ``finalize``);
#: nothing else is ever removed
_TMP_FILE_RE = re.compile(r"\.(?:manifest\.json|(?:%s)\.npy)\.tmp-[0-9a-f-]+" % "|".join(ARRAY_NAMES))


class ZooWriter:
    """Holds a zoo's lock and writes it chunk by chunk. Use ``ZooWriter.create``; a context manager.

    ``shard=(rank, world_size)`` restricts the writer to chunks with ``chunk_id % world_size ==
    rank`` (one rank of a multi-machine build). Each rank writes its own directory, combined
    afterwards with ``merge_zoos``; or all ranks write one directory on a shared filesystem
    (each holds its own rank lock), finalized afterwards by ``merge_zoos([dir], dir)``.
    """

    def __init__(self, path: Path, manifest: dict, lock: ZooLock, shard: tuple[int, int] | None):
        self.path = path
        self.manifest = manifest
        self._lock = lock
        self.shard = shard
        self._shapes: dict[str, tuple[str, tuple[int, ...]]] | None = None  # name -> (dtype, trailing shape)

    # ---- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, manifest_base: Mapping[str, Any], resume: bool = False,
               shard: tuple[int, int] | None = None) -> "ZooWriter":
        """Take the lock of ``path`` and open it for writing: a new zoo, or (``resume=True``) the
        partial zoo of the same build. Refuses a zoo of different settings, a non-zoo directory,
        and an existing zoo without ``resume``."""
        path = Path(path)
        base = _plain({k: v for k, v in dict(manifest_base).items() if k not in STORE_KEYS})
        base.setdefault("rows_per_model", len(base.get("snapshot_steps", [])))
        check_base(base)
        if shard is not None:
            rank, world = shard
            if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
                raise WspaceError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
            shard = (rank, world) if world > 1 else None
        with filesystem_errors(path):
            check_claimable(path, MANIFEST_NAME)
            if not is_marked(path) and (path / MANIFEST_NAME).exists():
                read_manifest(path)  # a zoo from before markers: its manifest must check out first
            claim(path)
            lock = ZooLock(path, LOCK_NAME if shard is None else rank_lock_name(*shard)).acquire()
            try:
                check_other_writers(path, lock.name, shard[1] if shard else None)
                manifest = cls._open_manifest(path, base, resume, shard)
                writer = cls(path, manifest, lock, shard)
                writer._remove_temps()
            except BaseException:
                lock.release()
                raise
        return writer

    @staticmethod
    def _open_manifest(path: Path, base: dict, resume: bool, shard: tuple[int, int] | None) -> dict:
        wanted = fingerprint(base)
        if (path / MANIFEST_NAME).exists():
            manifest = read_manifest(path)
            if manifest["fingerprint"] != wanted:
                differing = diff_keys({k: manifest.get(k) for k in ("architecture", "task", "build")},
                                      {k: base.get(k) for k in ("architecture", "task", "build")})
                raise WspaceError(
                    f"zoo {path} was built with different settings (differing: {', '.join(differing[:8])}); "
                    f"rerun with the settings it was started with, or choose another --out")
            differing = [k for k in _LAYOUT_KEYS if manifest.get(k) != base.get(k)]
            if manifest["chunk_size"] != chunk_size_of(base):
                differing.append("chunk_size")
            if differing:
                raise WspaceError(f"zoo {path} disagrees with this build on {', '.join(differing)}; "
                                  f"choose another --out")
            if not resume:
                if manifest["status"] == "complete":
                    raise WspaceError(f"{path} already holds a complete zoo; choose another --out "
                                      f"(or delete it to rebuild)")
                done = chunk_dirs(path)
                # a rank joining a shared directory that other ranks started is not resuming
                if shard is None or any(c % shard[1] == shard[0] for c in done):
                    raise WspaceError(f"{path} holds a partial zoo ({len(done)} of {manifest['num_chunks']} "
                                      f"chunks committed); rerun with --resume to finish it, or choose "
                                      f"another --out")
            return manifest
        chunk_size = chunk_size_of(base)
        manifest = {
            **base,
            "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": wanted,
            "status": "building", "chunk_size": chunk_size,
            "num_chunks": num_chunks_of(base["num_models"], chunk_size),
            "arrays": {},
            "created": {"started": _now(), "host": socket.gethostname()},
            "wspace_version": _version(),
        }
        write_manifest(path, manifest)
        return manifest

    def _remove_temps(self) -> None:
        """Under the lock, temp files of our chunks (all of them for the main writer) are a dead
        writer's leftovers."""
        chunks = inside(self.path, self.path / CHUNKS_DIR)
        mine = set(self.chunk_ids())
        if chunks.is_dir():
            for entry in chunks.iterdir():
                match = _TMP_CHUNK_RE.match(entry.name)
                if entry.name.startswith(TMP_PREFIX) and (self.shard is None or
                                                          (match and int(match.group(1)) in mine)):
                    _remove_tree(entry)
        if self.shard is not None:
            return
        for entry in self.path.iterdir():
            if _TMP_FILE_RE.fullmatch(entry.name) and (entry.is_file() or entry.is_symlink()):
                entry.unlink()

    # ---- what to build -------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def num_models(self) -> int:
        return self.manifest["num_models"]

    @property
    def num_chunks(self) -> int:
        return self.manifest["num_chunks"]

    @property
    def chunk_size(self) -> int:
        return self.manifest["chunk_size"]

    @property
    def rows_per_model(self) -> int:
        return self.manifest["rows_per_model"]

    @property
    def complete(self) -> bool:
        return self.manifest["status"] == "complete"

    def chunk_models(self, chunk_id: int) -> range:
        """The model indices chunk ``chunk_id`` holds."""
        return chunk_models(chunk_id, self.num_models, self.chunk_size)

    def chunk_ids(self) -> list[int]:
        """Every chunk this writer is to build (all of them, or its shard's)."""
        ids = range(self.num_chunks)
        if self.shard:
            rank, world = self.shard
            return [c for c in ids if c % world == rank]
        return list(ids)

    def committed_chunks(self) -> set[int]:
        """Chunk ids already committed (all of them once the zoo is complete)."""
        if self.complete:
            return set(range(self.num_chunks))
        return {c for c in chunk_dirs(self.path) if c < self.num_chunks}

    def pending_chunks(self) -> list[int]:
        """``chunk_ids()`` not yet committed, in order: what a resumed build still has to do."""
        done = self.committed_chunks()
        return [c for c in self.chunk_ids() if c not in done]

    # ---- committing ----------------------------------------------------------------------------

    def commit_chunk(self, chunk_id: int, arrays: Mapping[str, Any]) -> None:
        """Atomically commit the rows of chunk ``chunk_id`` (its models in (model, snapshot) order)."""
        self._require_open()
        if self.complete:
            raise WspaceError(f"zoo {self.path} is already complete; nothing more can be committed")
        if not isinstance(chunk_id, int) or not 0 <= chunk_id < self.num_chunks:
            raise WspaceError(f"chunk id {chunk_id!r} is out of range: this zoo has {self.num_chunks} chunks")
        if self.shard and chunk_id % self.shard[1] != self.shard[0]:
            raise WspaceError(f"chunk {chunk_id} does not belong to shard {self.shard[0]} of {self.shard[1]}")
        chunks = inside(self.path, self.path / CHUNKS_DIR)
        final = chunks / chunk_dir_name(chunk_id)
        if final.exists() or final.is_symlink():
            raise WspaceError(f"chunk {chunk_id} of zoo {self.path} is already committed")
        prepared = self._prepare(chunk_id, arrays)
        with filesystem_errors(self.path):
            self._write_chunk(chunk_id, prepared, chunks, final)

    def _write_chunk(self, chunk_id: int, prepared: dict[str, np.ndarray], chunks: Path, final: Path) -> None:
        tmp = chunks / f"{TMP_PREFIX}{chunk_dir_name(chunk_id)}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        try:
            entries = {name: save_npy(tmp / f"{name}.npy", array) for name, array in prepared.items()}
            models = self.chunk_models(chunk_id)
            record = {"chunk_id": chunk_id, "models": [models.start, models.stop],
                      "rows": len(models) * self.rows_per_model, "fingerprint": self.fingerprint,
                      "arrays": entries}
            with open(tmp / CHUNK_JSON, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            _remove_tree(tmp)
            raise
        fsync_dir(final.parent)

    def _prepare(self, chunk_id: int, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check one chunk's arrays against the contract and cast them to the stored dtypes."""
        names = set(arrays)
        if names != set(ARRAY_NAMES):
            raise WspaceError(f"chunk {chunk_id} arrays must be exactly {', '.join(ARRAY_NAMES)}; "
                              f"got {', '.join(sorted(names))}")
        models = self.chunk_models(chunk_id)
        S, columns = self.rows_per_model, self.manifest["metadata_columns"]
        rows = len(models) * S
        out: dict[str, np.ndarray] = {}
        raw = {name: _numpy(arrays[name], name) for name in ARRAY_NAMES}
        ndims = {"weights": (2,), "rollout_inputs": (3, 4), "rollout_outputs": (4,), "metadata": (2,)}
        for name, array in raw.items():
            if array.ndim not in ndims[name] or array.shape[0] != rows:
                raise WspaceError(f"chunk {chunk_id}: {name} has shape {array.shape}; expected {rows} rows "
                                  f"({len(models)} models x {S} snapshots) and {ndims[name]} dimensions")
        inputs = raw["rollout_inputs"]
        if inputs.ndim == 3:
            if not np.issubdtype(inputs.dtype, np.integer):
                raise WspaceError(f"chunk {chunk_id}: (R, N, T) rollout_inputs must be integer tokens, "
                                  f"got {inputs.dtype}")
            if inputs.size and (inputs.min() < np.iinfo(np.int16).min or inputs.max() > np.iinfo(np.int16).max):
                raise WspaceError(f"chunk {chunk_id}: rollout token ids do not fit int16")
            out["rollout_inputs"] = inputs.astype(np.int16, copy=False)
        else:
            out["rollout_inputs"] = inputs.astype(np.float16, copy=False)
        out["weights"] = raw["weights"].astype(np.float32, copy=False)
        out["rollout_outputs"] = raw["rollout_outputs"].astype(np.float16, copy=False)
        if raw["rollout_outputs"].shape[1:3] != out["rollout_inputs"].shape[1:3]:
            raise WspaceError(f"chunk {chunk_id}: rollout_outputs {raw['rollout_outputs'].shape} and "
                              f"rollout_inputs {inputs.shape} disagree on (rollouts, time steps)")
        metadata = raw["metadata"].astype(np.float64, copy=False)
        if metadata.shape[1] != len(columns):
            raise WspaceError(f"chunk {chunk_id}: metadata has {metadata.shape[1]} columns, the manifest "
                              f"names {len(columns)}: {columns}")
        col = {c: metadata[:, i] for i, c in enumerate(columns)}
        expected = {
            "model": np.repeat(np.arange(models.start, models.stop), S),
            "snapshot": np.tile(np.arange(S), len(models)),
            "step": np.tile(np.asarray(self.manifest["snapshot_steps"], dtype=np.float64), len(models)),
        }
        for c, want in expected.items():
            if not np.array_equal(col[c], want):
                raise WspaceError(f"chunk {chunk_id}: metadata column {c!r} must be {want[:2 * S].tolist()}... "
                                  f"(rows in (model, snapshot) order, global model indices "
                                  f"{models.start}..{models.stop - 1})")
        if not np.isin(col["split"], np.arange(len(SPLITS))).all():
            raise WspaceError(f"chunk {chunk_id}: metadata 'split' must be 0 (train), 1 (validation) or 2 (ood)")
        out["metadata"] = metadata
        check_arrays(out, self.manifest, f"chunk {chunk_id}",
                     "A network whose training diverged cannot go into a zoo: lower the learning rate, "
                     "or check the task family's data",
                     lambda r: f"{r} (model {models.start + r // S}, snapshot {r % S})")
        self._check_consistent(chunk_id, out)
        return out

    def _check_consistent(self, chunk_id: int, arrays: dict[str, np.ndarray]) -> None:
        """Every chunk has the same dtypes and trailing shapes (P, N, T, ...) as the first."""
        if self._shapes is None:
            self._shapes = {}
            dirs = chunk_dirs(self.path)
            if dirs:
                info = read_chunk(next(iter(dirs.values())), self.fingerprint)
                self._shapes = {n: (e["dtype"], tuple(e["shape"][1:])) for n, e in info["arrays"].items()}
        for name, array in arrays.items():
            now = (array.dtype.str, tuple(array.shape[1:]))
            if self._shapes.setdefault(name, now) != now:
                before = self._shapes[name]
                raise WspaceError(f"chunk {chunk_id}: {name} is {now[0]} with row shape {now[1]}, but "
                                  f"earlier chunks are {before[0]} {before[1]}")

    # ---- finishing -----------------------------------------------------------------------------

    def finalize(self) -> "Zoo":
        """Consolidate all chunks into the top-level arrays (model order), checksum them, mark the
        zoo complete and remove ``chunks/``. Safe to call again after a crash at any point."""
        self._require_open()
        with filesystem_errors(self.path):
            return self._finalize()

    def _finalize(self) -> "Zoo":
        if self.complete:
            _remove_tree(inside(self.path, self.path / CHUNKS_DIR))  # a crash may have left them behind
            return Zoo.open(self.path, verify=False)
        if self.shard is not None:
            raise WspaceError(f"this writer builds shard {self.shard[0]} of {self.shard[1]} of zoo {self.path}; "
                              f"once every rank is done, combine the shards with `wspace zoo merge` "
                              f"(merge_zoos)")
        dirs = chunk_dirs(self.path)
        missing = [c for c in range(self.num_chunks) if c not in dirs]
        if missing:
            hint = "finish the build with --resume (or merge the missing shards into it)"
            listing = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise WspaceError(f"zoo {self.path} cannot be finalized: {len(missing)} of {self.num_chunks} "
                              f"chunks are not committed ({listing}); {hint}")
        infos = [read_chunk(dirs[c], self.fingerprint, verify=True) for c in range(self.num_chunks)]
        token = uuid.uuid4().hex[:12]
        temps, entries = {}, {}
        try:
            for name in ARRAY_NAMES:
                temps[name] = self.path / f".{name}.npy.tmp-{token}"
                entries[name] = _consolidate(temps[name], [dirs[c] / i["arrays"][name]["file"]
                                                           for c, i in enumerate(infos)])
                entries[name]["file"] = f"{name}.npy"
            for name in ARRAY_NAMES:
                os.replace(temps[name], self.path / f"{name}.npy")
        except BaseException:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path)
        manifest = {**self.manifest, "status": "complete", "arrays": entries,
                    "created": {**self.manifest.get("created", {}), "completed": _now()}}
        write_manifest(self.path, manifest)
        self.manifest = manifest
        _remove_tree(inside(self.path, self.path / CHUNKS_DIR))
        fsync_dir(self.path)
        return Zoo.open(self.path, verify=False)

    def _require_open(self) -> None:
        if not self._lock.held:
            raise WspaceError(f"the writer of zoo {self.path} is closed")

    def close(self) -> None:
        """Release the lock (the zoo stays as it is: complete, or partial and resumable)."""
        self._lock.release()

    def __enter__(self) -> "ZooWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _consolidate(dest: Path, sources: list[Path]) -> dict:
    """Concatenate same-dtype ``.npy`` files along rows into ``dest``; fsync; manifest entry."""
    parts = [np.load(p, mmap_mode="r", allow_pickle=False) for p in sources]
    dtype, tail = parts[0].dtype, parts[0].shape[1:]
    shape = (sum(p.shape[0] for p in parts), *tail)
    with open(dest, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                 "fortran_order": False, "shape": shape})
        for part in parts:
            f.write(np.ascontiguousarray(part).tobytes())  # one chunk in memory at a time
        f.flush()
        os.fsync(f.fileno())
    check_npy(dest, dtype.str, shape)
    return {"dtype": dtype.str, "shape": list(shape), "sha256": sha256_file(dest),
            "bytes": dest.stat().st_size}


def _version() -> str:
    from wspace_core import __version__
    return __version__


class Zoo:
    """A complete zoo, memory-mapped read-only. Open with ``Zoo.open(path)``."""

    def __init__(self, path: Path, manifest: dict, arrays: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self._arrays = arrays

    @classmethod
    def open(cls, path: str | os.PathLike, expect_arch: str | None = None, verify: bool = True) -> "Zoo":
        """Check and memory-map the zoo at ``path``. Always checks the manifest (format version,
        file names, status), every file's header (dtype, shape, no pickled objects) and size;
        ``verify=True`` also checks every file's sha256."""
        path = Path(path)
        with filesystem_errors(path):
            return cls._open(path, expect_arch, verify)

    @classmethod
    def _open(cls, path: Path, expect_arch: str | None, verify: bool) -> "Zoo":
        manifest = read_manifest(path)
        if manifest["status"] != "complete":
            done = len([c for c in chunk_dirs(path) if c < manifest["num_chunks"]])
            raise WspaceError(f"zoo {path} is still being built ({done} of {manifest['num_chunks']} chunks "
                              f"committed); finish it by rerunning the build with --resume "
                              f"(`wspace zoo info {path}` shows its progress)")
        arch = manifest["architecture"].get("name")
        if expect_arch is not None and arch != expect_arch:
            raise WspaceError(f"zoo {path} holds {arch!r} networks, but {expect_arch!r} was expected; "
                              f"choose a zoo built with --arch {expect_arch}, or use --arch {arch}")
        rows = manifest["num_models"] * manifest["rows_per_model"]
        arrays = {}
        for name in ARRAY_NAMES:
            entry = manifest["arrays"][name]
            file = path / safe_file_name(entry.get("file"), f"{path / MANIFEST_NAME} (array {name!r})")
            inside(path, file)
            check_npy(file, entry.get("dtype"), entry.get("shape"))
            if entry.get("shape", [None])[0] != rows:
                raise WspaceError(f"{file} has {entry.get('shape')} rows but the zoo has {rows} "
                                  f"({manifest['num_models']} models x {manifest['rows_per_model']}); rebuild it")
            if verify and sha256_file(file) != entry.get("sha256"):
                raise WspaceError(f"{file} does not match the checksum in {MANIFEST_NAME}: the file is "
                                  f"damaged or was changed. Re-copy the zoo from its source, or rebuild it")
            arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
        if arrays["metadata"].shape[1] != len(manifest["metadata_columns"]):
            raise WspaceError(f"zoo {path}: metadata.npy has {arrays['metadata'].shape[1]} columns but the "
                              f"manifest names {len(manifest['metadata_columns'])}; rebuild it")
        fix = "The zoo is damaged or was forged: re-copy it from its source, or rebuild it"
        check_metadata(np.asarray(arrays["metadata"]), manifest, f"zoo {path}", fix)
        if verify:  # reads every value, as the checksums just did
            S = manifest["rows_per_model"]
            check_arrays(arrays, manifest, f"zoo {path}", fix,
                         lambda r: f"{r} (model {r // S}, snapshot {r % S})")
        return cls(path, manifest, arrays)

    # ---- what it holds -------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def num_models(self) -> int:
        return self.manifest["num_models"]

    @property
    def rows_per_model(self) -> int:
        return self.manifest["rows_per_model"]

    @property
    def num_rows(self) -> int:
        return self.num_models * self.rows_per_model

    @property
    def snapshot_steps(self) -> list[int]:
        return list(self.manifest["snapshot_steps"])

    @property
    def metadata_columns(self) -> list[str]:
        return list(self.manifest["metadata_columns"])

    @property
    def weights(self) -> np.ndarray:
        """(R, P) float32 memmap, flat weights in the architecture's layout order."""
        return self._arrays["weights"]

    @property
    def rollout_inputs(self) -> np.ndarray:
        """(R, N, T) int16 tokens or (R, N, T, I) float16 memmap."""
        return self._arrays["rollout_inputs"]

    @property
    def rollout_outputs(self) -> np.ndarray:
        """(R, N, T, O) float16 memmap (log-probabilities for categorical outputs)."""
        return self._arrays["rollout_outputs"]

    @cached_property
    def metadata(self) -> dict[str, np.ndarray]:
        """column -> (R,) float64 (read into memory once; it is small)."""
        table = np.array(self._arrays["metadata"])  # (R, C), copied out of the memmap
        return {name: table[:, i] for i, name in enumerate(self.metadata_columns)}

    def rows(self, split: str | None = None, snapshot: int | None = None) -> np.ndarray:
        """Row indices of one split and/or one snapshot (negative snapshots count from the end)."""
        keep = np.ones(self.num_rows, dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise WspaceError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
            keep &= self.metadata["split"] == SPLITS.index(split)
        if snapshot is not None:
            S = self.rows_per_model
            if not -S <= snapshot < S:
                raise WspaceError(f"snapshot {snapshot} is out of range: this zoo has {S} snapshots "
                                  f"(steps {self.snapshot_steps})")
            keep &= self.metadata["snapshot"] == snapshot % S
        return np.flatnonzero(keep)

    def architecture(self):
        """The zoo's architecture at its stored sizes, from the installed plugin, checked against
        the stored parameter layout."""
        from wspace_core import plugins
        from wspace_core.architecture import Sizes

        stored = self.manifest["architecture"]
        arch = plugins.architectures().get(stored["name"])(Sizes(**stored["sizes"]))
        if "layout" in stored and arch.layout.as_dict() != stored["layout"]:
            raise WspaceError(f"the installed {stored['name']!r} architecture lays out parameters differently "
                              f"from zoo {self.path}; install the plugin version that built the zoo")
        if arch.layout.num_params != self.weights.shape[1]:
            raise WspaceError(f"zoo {self.path} stores {self.weights.shape[1]} parameters per network; the "
                              f"{stored['name']!r} architecture has {arch.layout.num_params}")
        return arch

    def task_family(self, **local_settings: Any):
        """The zoo's task family with its stored settings (``local_settings``, e.g. a data folder,
        are added; they must not change what the tasks are)."""
        from wspace_core import plugins

        stored = self.manifest["task"]
        return plugins.task_families().get(stored["name"])(**{**stored.get("settings", {}), **local_settings})

    def __repr__(self) -> str:
        return (f"Zoo({str(self.path)!r}: {self.num_models} {self.manifest['architecture'].get('name')} "
                f"models on {self.manifest['task'].get('name')}, {self.num_rows} rows)")
