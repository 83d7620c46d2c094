"""JSON files the application writes (zoo manifests, run records, results, reports): written
atomically, numpy-aware, and optionally strict (NaN and infinities as null).

Plain json + os; no torch, no plugins.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def json_default(value):
    """``json.dumps`` default for numpy scalars and arrays."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def finite(data):
    """NaN and infinities -> None, so the JSON is strict (a correlation of constant data is NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def json_digest(data) -> str:
    """A short (12 hex digits) sha256 of ``data``'s sorted-key JSON: a name for a set of settings."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fsync_dir(path: Path) -> None:
    """Make a rename/create/unlink inside ``path`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, *, sort_keys: bool = False, strict: bool = False) -> None:
    """Write ``path`` via a temp file + fsync + rename: readers see the old or the new file, never half.
    numpy values become plain JSON; ``strict``: NaN and infinities become null."""
    path = Path(path)
    if strict:
        data = finite(json.loads(json.dumps(data, default=json_default)))
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=json_default, allow_nan=not strict)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
