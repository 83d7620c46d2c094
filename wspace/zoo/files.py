"""Durable file primitives of the zoo store: deterministic ``.npy`` files,
sha256 checksums, and ``.npy`` header checks that refuse pickled (object) arrays.

Everything here is plain numpy + os; no torch, no plugins.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from wspace_core.registry import WspaceError

_HASH_BLOCK = 1 << 22  # 4 MiB


class ZooFileError(WspaceError):
    """A filesystem operation on a zoo failed (disk full, read-only, no permission, a directory
    where a file belongs, ...): the message names the path and the fix."""


#: errno -> (what happened, what to do); ``{path}`` is the file or directory concerned
_OS_FIXES = {
    errno.ENOSPC: ("there is no space left on the device holding {path}",
                   "free space there (or use a directory on another disk) and run the command again: what "
                   "was committed is kept (`wspace zoo build` and `import-paper` continue with --resume)"),
    errno.EDQUOT: ("the disk quota is exhausted for {path}",
                   "free space or raise the quota, and run the command again: what was committed is kept "
                   "(`wspace zoo build` and `import-paper` continue with --resume)"),
    errno.EROFS: ("{path} is on a read-only filesystem", "choose a directory on a writable disk"),
    errno.EACCES: ("permission to access {path} was denied",
                   "choose a directory you can write to, or fix its permissions"),
    errno.EPERM: ("the operation on {path} is not permitted",
                  "choose a directory you can write to, or fix its permissions"),
    errno.EISDIR: ("{path} is a directory where the zoo needs a file",
                   "the zoo is damaged: move that directory away, then re-copy or rebuild the zoo"),
    errno.ENOTDIR: ("a part of {path} is a file where a directory belongs",
                    "choose another directory, or move that file away"),
    errno.ELOOP: ("{path} is a symbolic link (or a loop of them) where the zoo needs a plain file",
                  "replace the link by the file it points to, or remove it"),
}


def os_error_message(err: OSError, where: Path | str | None = None) -> str:
    """A one-paragraph message for ``err`` naming the path and the fix."""
    path = err.filename if err.filename is not None else where
    if err.errno in (errno.ENOSPC, errno.EDQUOT) and where is not None:
        path = where  # the disk, not the temp file that could not be written (it is gone)
    what, fix = _OS_FIXES.get(err.errno, ("{path}: " + (err.strerror or str(err)),
                                          "check the disk and the path, then run the command again"))
    return f"{what.format(path=path)} ({err.strerror or err}); {fix}"


@contextmanager
def filesystem_errors(where: Path | str):
    """Turn an ``OSError`` raised inside into a ``ZooFileError`` naming the path and the fix."""
    try:
        yield
    except OSError as err:
        raise ZooFileError(os_error_message(err, where)) from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def canonical_json(data: Any) -> str:
    """The one JSON spelling of ``data`` that fingerprints hash: sorted keys, no spaces."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise WspaceError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WspaceError(f"{what} {path} is not valid JSON ({err}); the file is damaged: "
                          f"re-copy the zoo or rebuild it") from None
    except OSError as err:
        raise ZooFileError(f"{what} {path} cannot be read: {os_error_message(err, path)}") from None
    if not isinstance(data, dict):
        raise WspaceError(f"{what} {path} does not hold a JSON object; re-copy the zoo or rebuild it")
    return data


def save_npy(path: Path, array: np.ndarray) -> dict:
    """Write ``array`` as a C-order ``.npy`` (no timestamps: equal arrays give equal bytes), fsync it,
    and return its manifest entry {file, dtype, shape, sha256, bytes}."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise WspaceError(f"refusing to store an object array in {path.name}; zoo arrays are numeric")
    with open(path, "wb") as f:
        try:
            np.lib.format.write_array(f, array, allow_pickle=False)
        except OSError as err:
            if err.errno is None:  # numpy's "N requested and M written": a short write, the disk is full
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {err}", str(path)) from None
            raise
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "dtype": array.dtype.str, "shape": list(array.shape),
            "sha256": sha256_file(path), "bytes": path.stat().st_size}


def npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, data offset) read from the header alone, without the data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise WspaceError(f"{path} is missing; re-copy the zoo or rebuild it") from None
    except IsADirectoryError:
        raise WspaceError(f"{path} is a directory, not a .npy file; the zoo is damaged: re-copy the zoo "
                          f"or rebuild it") from None
    except (ValueError, OSError, SyntaxError) as err:
        raise WspaceError(f"{path} is not a readable .npy file ({err}); it is damaged: "
                          f"re-copy the zoo or rebuild it") from None
    return dtype, tuple(shape), fortran, offset


def check_npy(path: Path, dtype: str | None = None, shape: list | tuple | None = None) -> tuple[np.dtype, tuple]:
    """Refuse object (pickled) arrays, Fortran order, a header disagreeing with the manifest's
    dtype/shape, and a file shorter or longer than its header says (truncation)."""
    found_dtype, found_shape, fortran, offset = npy_header(path)
    if found_dtype.hasobject:
        raise WspaceError(f"{path} holds a Python-object (pickled) array; wspace never unpickles zoo "
                          f"files. Rebuild the zoo, or re-import it from trusted numeric arrays")
    if fortran:
        raise WspaceError(f"{path} is stored in Fortran order; wspace zoos are C-order: rebuild the zoo")
    try:
        wanted = None if dtype is None else np.dtype(dtype)
    except TypeError:
        raise WspaceError(f"the manifest names dtype {dtype!r} for {path}, which is not a numpy dtype; "
                          f"the zoo is inconsistent: re-copy it or rebuild it") from None
    if wanted is not None and found_dtype != wanted:
        raise WspaceError(f"{path} holds dtype {found_dtype.str} but the manifest says {dtype}; "
                          f"the zoo is inconsistent: re-copy it or rebuild it")
    if shape is not None and tuple(found_shape) != tuple(shape):
        raise WspaceError(f"{path} holds shape {found_shape} but the manifest says {tuple(shape)}; "
                          f"the zoo is inconsistent: re-copy it or rebuild it")
    if any(n < 0 for n in found_shape):
        raise WspaceError(f"{path} has a negative size in its header shape {found_shape}; the file is "
                          f"damaged. Re-copy the zoo or rebuild it")
    # Python integers: a forged header shape cannot overflow into a size that happens to fit
    expected = offset + math.prod(found_shape) * found_dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise WspaceError(f"{path} is {actual} bytes but its header shape {found_shape} needs {expected}: "
                          f"the file is truncated or damaged. Re-copy the zoo or rebuild it")
    return found_dtype, found_shape


def safe_file_name(name: Any, where: str) -> str:
    """A manifest's file entry must be a plain file name inside the zoo directory."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name) or Path(name).name != name or ":" in name):
        raise WspaceError(f"{where} names file {name!r}, which is not a plain file name inside the "
                          f"zoo directory; refusing to follow it (the manifest is damaged or hostile: "
                          f"re-copy the zoo from a trusted source or rebuild it)")
    return name
