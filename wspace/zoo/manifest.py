"""The zoo manifest: plain JSON that says what a zoo holds and how to check it.

Keys written by the store (the builder supplies the rest: architecture, task, build,
snapshot_steps, num_models, rows_per_model, metadata_columns): format, format_version,
fingerprint, status, chunk_size, num_chunks, arrays ({name: {file, dtype, shape, sha256, bytes}}),
created (timestamps and host: never fingerprinted), wspace_version, manifest_sha256.

``manifest_sha256`` seals the manifest itself: the sha256 of the canonical JSON of every key but
``created``, ``wspace_version`` and itself, so an edited column name, snapshot step, model count or
file entry is refused. Manifests written before it existed (no such key) are still read.

The fingerprint is the sha256 of the canonical JSON of {architecture, task, build}, where
``build`` leaves out the keys in ``UNFINGERPRINTED_BUILD_KEYS`` (where a build runs, not what it
computes), so shards built on different devices merge and a build resumes on another machine.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from wspace_core.registry import WspaceError
from wspace.files import write_json_atomic
from wspace.zoo.files import canonical_json, read_json, safe_file_name

FORMAT = "wspace-zoo"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARRAY_NAMES = ("weights", "rollout_inputs", "rollout_outputs", "metadata")
REQUIRED_METADATA = ("model", "snapshot", "step", "split")
UNFINGERPRINTED_BUILD_KEYS = ("device",)
#: the manifest's own checksum: sha256 of the canonical JSON of every other key but CHECKSUM_FREE_KEYS
CHECKSUM_KEY = "manifest_sha256"
#: what no checksum covers: when and where the zoo was made, and by which wspace (nothing that gives
#: the data its meaning)
CHECKSUM_FREE_KEYS = ("created", "wspace_version", CHECKSUM_KEY)
#: keys the store owns: never taken from a builder's manifest_base, never fingerprinted
STORE_KEYS = ("format", "format_version", "fingerprint", "status", "num_chunks", "arrays", "created",
              "wspace_version", CHECKSUM_KEY)


def metadata_columns(family: Any) -> list[str]:
    """The metadata columns of a zoo of ``family``'s networks: the required ones, then the
    family's task and metric columns."""
    return [*REQUIRED_METADATA, *family.task_columns, *family.metric_columns]

def fingerprint(manifest: dict) -> str:
    build = {k: v for k, v in manifest.get("build", {}).items() if k not in UNFINGERPRINTED_BUILD_KEYS}
    data = {"architecture": manifest.get("architecture"), "task": manifest.get("task"), "build": build}
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """sha256 of everything in the manifest that gives the data its meaning (all keys but
    ``CHECKSUM_FREE_KEYS``): the column names, snapshot steps, model and row counts, chunking,
    status and the per-file entries as much as the fingerprinted settings."""
    data = {k: v for k, v in manifest.items() if k not in CHECKSUM_FREE_KEYS}
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def chunk_size_of(base: dict) -> int:
    size = base.get("chunk_size", base.get("build", {}).get("chunk_size"))
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise WspaceError(f"zoo manifest needs a positive integer build.chunk_size, got {size!r}")
    return size


def num_chunks_of(num_models: int, chunk_size: int) -> int:
    return math.ceil(num_models / chunk_size)


def chunk_models(chunk_id: int, num_models: int, chunk_size: int) -> range:
    """The model indices of chunk ``chunk_id``: chunks are consecutive runs of ``chunk_size`` models."""
    start = chunk_id * chunk_size
    return range(start, min(start + chunk_size, num_models))


def check_base(base: dict) -> None:
    """The builder-supplied part must carry what the store relies on."""
    missing = [k for k in ("architecture", "task", "build", "snapshot_steps", "num_models",
                           "metadata_columns") if k not in base]
    if missing:
        raise WspaceError(f"zoo manifest is missing {', '.join(missing)}")
    num_models = base["num_models"]
    if not isinstance(num_models, int) or isinstance(num_models, bool) or num_models < 1:
        raise WspaceError(f"zoo num_models must be a positive integer, got {num_models!r}")
    steps = base["snapshot_steps"]
    if not isinstance(steps, list) or not steps:
        raise WspaceError(f"zoo snapshot_steps must be a non-empty list, got {steps!r}")
    rows = base.get("rows_per_model", len(steps))
    if rows != len(steps):
        raise WspaceError(f"zoo rows_per_model={rows} but there are {len(steps)} snapshot steps")
    columns = base["metadata_columns"]
    absent = [c for c in REQUIRED_METADATA if c not in columns]
    if absent:
        raise WspaceError(f"zoo metadata_columns lack {', '.join(absent)} (got {columns})")
    if len(set(columns)) != len(columns):
        raise WspaceError(f"zoo metadata_columns repeat a name: {columns}")
    chunk_size_of(base)


def read_manifest(zoo_dir: Path) -> dict:
    """Read and validate the manifest of ``zoo_dir`` (building or complete)."""
    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise WspaceError(f"no zoo at {zoo_dir}: not a directory (build one with `wspace zoo build`)")
    path = zoo_dir / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        raise WspaceError(f"{zoo_dir} is not a wspace zoo: it has no {MANIFEST_NAME} "
                          f"(build one with `wspace zoo build`, or import one with `wspace zoo import-paper`)")
    if path.is_symlink():
        raise WspaceError(f"{path} is a symbolic link; a zoo's manifest must be a plain file inside the zoo "
                          f"(wspace never follows links out of a zoo): replace the link by a copy of the file")
    manifest = read_json(path, "zoo manifest")
    if manifest.get("format") != FORMAT:
        raise WspaceError(f"{path} is not a wspace zoo manifest (format {manifest.get('format')!r}, "
                          f"expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WspaceError(f"{path} has an invalid format_version {version!r}; re-copy or rebuild the zoo")
    if version > FORMAT_VERSION:
        raise WspaceError(f"zoo {zoo_dir} uses format version {version}, newer than the version "
                          f"{FORMAT_VERSION} this wspace reads; upgrade wspace (pip install -U wspace)")
    if manifest.get("status") not in ("building", "complete"):
        raise WspaceError(f"{path} has an unknown status {manifest.get('status')!r}; re-copy or rebuild the zoo")
    try:
        check_base(manifest)
    except WspaceError as err:
        raise WspaceError(f"{path}: {err}; the manifest is damaged: re-copy or rebuild the zoo") from None
    _check_types(path, manifest)
    for name, entry in manifest.get("arrays", {}).items():
        if not isinstance(entry, dict):
            raise WspaceError(f"{path}: array entry {name!r} is not an object; re-copy or rebuild the zoo")
        safe_file_name(entry.get("file"), f"{path} (array {name!r})")
        shape, dtype = entry.get("shape"), entry.get("dtype")
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                for n in shape)) or not _is_dtype(dtype):
            raise WspaceError(f"{path}: array entry {name!r} needs a numpy dtype name and a shape (a list of "
                              f"sizes), got dtype {dtype!r}, shape {shape!r}; re-copy or rebuild the zoo")
    if manifest["status"] == "complete":
        missing = [n for n in ARRAY_NAMES if n not in manifest["arrays"]]
        if missing:
            raise WspaceError(f"zoo {zoo_dir} manifest lists no {', '.join(missing)}; re-copy or rebuild the zoo")
    recorded = manifest.get("fingerprint")
    if recorded != fingerprint(manifest):
        raise WspaceError(f"{path}: the recorded fingerprint does not match the architecture, task and "
                          f"build it describes; the manifest was edited or damaged: re-copy or rebuild the zoo")
    checksum = manifest.get(CHECKSUM_KEY)
    if checksum is not None and checksum != manifest_checksum(manifest):
        raise WspaceError(f"{path}: the manifest's checksum ({CHECKSUM_KEY}) does not match its contents: a "
                          f"field that gives the data its meaning (metadata_columns, snapshot_steps, num_models, "
                          f"rows_per_model, chunk_size, status, arrays, ...) was edited or damaged: re-copy the "
                          f"zoo from its source, or rebuild it")
    return manifest


def has_checksum(manifest: dict) -> bool:
    """False for a manifest written before manifests carried their own checksum: its fingerprinted
    settings and per-file checksums are checked, its other fields are not."""
    return manifest.get(CHECKSUM_KEY) is not None


def _is_dtype(name: Any) -> bool:
    try:
        return isinstance(name, str) and np.dtype(name) is not None
    except TypeError:
        return False


def _check_types(path: Path, manifest: dict) -> None:
    """The shapes of the values readers rely on (a hand-edited manifest can carry anything)."""
    expected = {"architecture": dict, "task": dict, "build": dict, "arrays": dict, "num_chunks": int,
                "chunk_size": int, "rows_per_model": int}
    for key, kind in expected.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WspaceError(f"{path}: {key!r} must be a JSON {'object' if kind is dict else 'integer'}, "
                              f"got {value!r}; the manifest is damaged: re-copy or rebuild the zoo")
    if not all(isinstance(c, str) for c in manifest["metadata_columns"]) or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in manifest["snapshot_steps"]):
        raise WspaceError(f"{path}: metadata_columns must be names and snapshot_steps integers; the manifest "
                          f"is damaged: re-copy or rebuild the zoo")
    if manifest["num_chunks"] != num_chunks_of(manifest["num_models"], manifest["chunk_size"]):
        raise WspaceError(f"{path}: num_chunks {manifest['num_chunks']} disagrees with num_models and "
                          f"chunk_size; the manifest is damaged: re-copy or rebuild the zoo")


def write_manifest(zoo_dir: Path, manifest: dict) -> None:
    """Write ``manifest`` atomically, sealed with its checksum."""
    write_json_atomic(Path(zoo_dir) / MANIFEST_NAME, {**manifest, CHECKSUM_KEY: manifest_checksum(manifest)},
                      sort_keys=True)


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two JSON values differ (for 'built with different settings' errors)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(root)"]
