"""Committed chunks of a zoo being built: ``chunks/chunk-NNNNN/`` each holding its arrays and a
``chunk.json`` (model range, rows, per-file sha256). A chunk exists only once it is complete: it is
written under ``chunks/.tmp-*`` and renamed into place; anything named otherwise is ignored."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from wspace_core.registry import WspaceError
from wspace.zoo.directory import inside
from wspace.zoo.files import check_npy, read_json, safe_file_name, sha256_file
from wspace.zoo.manifest import ARRAY_NAMES

CHUNKS_DIR = "chunks"
CHUNK_JSON = "chunk.json"
TMP_PREFIX = ".tmp-"
_CHUNK_RE = re.compile(r"chunk-(\d{5,})")


def chunk_dir_name(chunk_id: int) -> str:
    return f"chunk-{chunk_id:05d}"


def chunk_dirs(zoo_dir: Path) -> dict[int, Path]:
    """chunk id -> directory, for every committed chunk (temp directories are not chunks).
    A ``chunks`` folder or a chunk that is a symbolic link leading outside the zoo is refused."""
    root = inside(zoo_dir, Path(zoo_dir) / CHUNKS_DIR)
    if not root.is_dir():
        return {}
    out = {}
    for entry in root.iterdir():
        match = _CHUNK_RE.fullmatch(entry.name)
        if match and entry.is_dir():
            out[int(match.group(1))] = inside(zoo_dir, entry)
    return dict(sorted(out.items()))


def read_chunk(chunk_dir: Path, fingerprint: str | None = None, verify: bool = False) -> dict:
    """chunk.json of a committed chunk, its files checked (sizes/headers; sha256 when ``verify``)."""
    fix = f"delete {chunk_dir} and rerun the build with --resume to rebuild that chunk"
    try:
        info = read_json(chunk_dir / CHUNK_JSON, "chunk record")
    except WspaceError as err:  # e.g. an empty chunk folder
        raise type(err)(f"{err} (committed chunk {chunk_dir.name} is incomplete: {fix})") from None
    if fingerprint is not None and info.get("fingerprint") != fingerprint:
        raise WspaceError(f"chunk {chunk_dir} belongs to a different build (fingerprint mismatch); {fix}")
    arrays = info.get("arrays", {})
    if not isinstance(arrays, dict):
        arrays = {}
    missing = [n for n in ARRAY_NAMES if not isinstance(arrays.get(n), dict)]
    if missing:
        raise WspaceError(f"chunk {chunk_dir} lacks arrays {', '.join(missing)}; {fix}")
    for name in ARRAY_NAMES:
        entry = arrays[name]
        file = safe_file_name(entry.get("file"), f"{chunk_dir / CHUNK_JSON} (array {name!r})")
        path = inside(chunk_dir, chunk_dir / file)
        try:
            check_npy(path, entry.get("dtype"), entry.get("shape"))
        except WspaceError as err:
            raise WspaceError(f"{err} (in committed chunk {chunk_dir.name}: {fix})") from None
        if verify and sha256_file(path) != entry.get("sha256"):
            raise WspaceError(f"{path} does not match its checksum in {CHUNK_JSON}: the file is "
                              f"damaged; {fix}")
    return info


def load_chunk_array(chunk_dir: Path, info: dict, name: str) -> np.ndarray:
    return np.load(chunk_dir / info["arrays"][name]["file"], mmap_mode="r", allow_pickle=False)
