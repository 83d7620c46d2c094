"""The zoo directory's boundaries: which directories wspace may write into and clean, and which
paths inside a zoo it may follow.

Ownership: wspace writes the marker file ``.wspace-zoo`` into a directory the moment it makes it a
zoo (a new directory, or an empty one: hidden files and a dead builder's lock files aside). Only a
directory holding the marker, or the ``manifest.json`` of a zoo written before markers existed, is
ever written into or cleaned (temp files, ``chunks/``). Any other non-empty directory is refused:
it may hold a user's own ``chunks/`` folder that a finished build would otherwise delete.

Containment: a symbolic link inside a zoo that leads outside it (``chunks`` pointing elsewhere, a
``weights.npy`` pointing at another file) is refused, never followed: a zoo from elsewhere cannot
make wspace read, write or delete outside it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from wspace_core.registry import WspaceError
from wspace.files import fsync_dir
from wspace.zoo.lock import is_lock_name

MARKER_NAME = ".wspace-zoo"
_MARKER_TEXT = "wspace zoo directory: wspace may write into and clean this directory\n"


def is_marked(zoo_dir: Path) -> bool:
    """Whether wspace marked ``zoo_dir`` as its own (a regular file, not a link)."""
    marker = Path(zoo_dir) / MARKER_NAME
    return marker.is_file() and not marker.is_symlink()


def _foreign_entries(path: Path) -> list[str]:
    """What in ``path`` wspace did not put there: all but hidden entries and a dead builder's lock
    files (what a build killed before it marked its directory, by an older wspace, leaves)."""
    return sorted(p.name for p in path.iterdir()
                  if not p.name.startswith(".") and not (is_lock_name(p.name) and p.is_file() and not p.is_symlink()))


def check_claimable(path: Path, manifest_name: str) -> None:
    """Refuse ``path`` as the directory of a zoo to write unless it is new, empty (hidden files
    aside), marked by wspace, or holds a zoo manifest."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise WspaceError(f"{path} is a symbolic link to a missing directory; choose an empty or new "
                          f"directory for the zoo")
    if not path.exists():
        return
    if not path.is_dir():
        raise WspaceError(f"{path} exists and is a file, not a directory; choose an empty or new directory "
                          f"for the zoo")
    if is_marked(path) or (path / manifest_name).exists():
        return
    entries = _foreign_entries(path)
    if entries:
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise WspaceError(f"{path} exists, is not empty ({shown}) and is not a wspace zoo (it has no "
                          f"{MARKER_NAME} marker and no {manifest_name}); wspace writes only into "
                          f"directories it created: choose an empty or new directory")


def claim(path: Path) -> None:
    """Create ``path`` if needed and write the ownership marker (idempotent)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_marked(path):
        return
    marker = path / MARKER_NAME
    if marker.is_symlink() or (marker.exists() and not marker.is_file()):
        raise WspaceError(f"{marker} is not a regular file (a link or a directory); remove it, then "
                          f"run the command again")
    text = _MARKER_TEXT + json.dumps({"created": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"
    try:  # its existence is what counts: no temp file, and of two claimers one creates it
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        return
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path)


def inside(zoo_dir: Path, path: Path) -> Path:
    """``path`` (a path under ``zoo_dir``) once it is certain that following it stays inside the
    zoo: a symbolic link that leads out of ``zoo_dir`` is refused, naming where it leads."""
    root = Path(zoo_dir).resolve()
    target = Path(path).resolve()
    if target != root and root not in target.parents:
        raise WspaceError(f"{path} is a symbolic link leading outside the zoo (to {target}); wspace never "
                          f"follows links out of a zoo. Replace the link by a copy of what it points to "
                          f"(e.g. re-copy the zoo with `cp -rL`), or remove it")
    return path
