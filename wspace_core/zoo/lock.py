"""The builder's lock: one writer per zoo directory.

The lock is a small JSON file (pid, host, start time) created with ``O_CREAT | O_EXCL``, so of
two writers exactly one creates it. A lock whose process is gone (same host, pid not alive, or
the pid now belongs to a younger process) is stale and is taken over with a warning. A lock from
another host cannot be checked and is refused with the way out (delete it if that build is dead).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

from wspace_core.registry import WspaceError

LOCK_NAME = "build.lock"
#: lock of the writer of shard r of W when the ranks of a multi-machine build share one directory
RANK_LOCK_PATTERN = "build.rank*.lock"


def rank_lock_name(rank: int, world_size: int) -> str:
    return f"build.rank{rank}of{world_size}.lock"


def is_lock_name(name: str) -> bool:
    return name == LOCK_NAME or (name.startswith("build.rank") and name.endswith(".lock"))
#: an unreadable (empty, half-written) lock older than this is treated as stale
_UNREADABLE_GRACE_S = 30.0

log = logging.getLogger(__name__)


class ZooLockedError(WspaceError):
    """Another live process holds the zoo's lock."""


def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None


def holder_alive(holder: dict) -> bool | None:
    """True/False for a lock of this host; None when it cannot be told (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    ticks = holder.get("start_ticks")
    if ticks is not None:
        now = _process_start_ticks(pid)
        if now is not None and now != ticks:
            return False  # the pid was reused by another process
    return True


def read_lock(zoo_dir: Path, name: str = LOCK_NAME) -> dict | None:
    """The holder of a lock of ``zoo_dir`` ({pid, host, since, ...}), None when unlocked."""
    try:
        return _read(Path(zoo_dir) / name) or {}
    except FileNotFoundError:
        return None


def lock_names(zoo_dir: Path) -> list[str]:
    """Names of the lock files present in ``zoo_dir`` (the main one and any per-rank ones)."""
    zoo_dir = Path(zoo_dir)
    names = [LOCK_NAME] if (zoo_dir / LOCK_NAME).exists() else []
    return names + sorted(p.name for p in zoo_dir.glob(RANK_LOCK_PATTERN))


def describe_holder(zoo_dir: Path, holder: dict, name: str) -> str:
    who = "" if name == LOCK_NAME else f" ({name.removeprefix('build.').removesuffix('.lock')})"
    return (f"zoo {zoo_dir} is being built{who} by pid {holder.get('pid')} on {holder.get('host')} "
            f"since {holder.get('since')}")


class ZooLock:
    """``with ZooLock(dir):`` holds the lock; ``release()`` removes it only if it is still ours.
    ``name`` picks the lock file (``rank_lock_name`` for one rank of a shared-directory build)."""

    def __init__(self, zoo_dir: Path | str, name: str = LOCK_NAME):
        self.zoo_dir = Path(zoo_dir)
        self.name = name
        self.path = self.zoo_dir / name
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> "ZooLock":
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "start_ticks": _process_start_ticks(os.getpid()), "token": self.token}
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise ZooLockedError(f"could not take the lock {self.path}: it keeps changing hands; "
                             f"another process is building this zoo, wait for it")

    def _handle_existing(self) -> None:
        try:
            holder = _read(self.path)
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: retry
        if holder is None:  # empty or half-written: its writer may be mid-write
            if time.time() - mtime < _UNREADABLE_GRACE_S:
                raise ZooLockedError(f"zoo {self.zoo_dir} is being locked by another process right now "
                                     f"({self.path} is still empty); wait a moment and retry")
            self._take_over({}, f"unreadable lock file {self.path}")
            return
        alive = holder_alive(holder)
        if alive is False:
            self._take_over(holder, f"stale lock of pid {holder.get('pid')} on {holder.get('host')} "
                                    f"(since {holder.get('since')}), which is no longer running")
            return
        fix = (f"stop it (kill {holder.get('pid')})" if alive else
               f"if that build is dead, delete {self.path}")
        raise ZooLockedError(f"{describe_holder(self.zoo_dir, holder, self.name)}; wait for it or {fix}, "
                             f"or build into another --out")

    def _take_over(self, stale: dict, what: str) -> None:
        """Move the stale lock aside atomically, then check it really was the stale one."""
        aside = self.path.with_name(f".{self.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process moved it first
        moved = _read(aside) or {}
        if stale and moved.get("token") != stale.get("token"):
            # a live writer took the lock between our read and our rename: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            raise ZooLockedError(f"zoo {self.zoo_dir} was just locked by pid {moved.get('pid')} on "
                                 f"{moved.get('host')}; wait for it, or build into another --out")
        os.unlink(aside)
        message = f"taking over the {what}: zoo {self.zoo_dir}"
        log.warning(message)
        warnings.warn(message, stacklevel=4)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            holder = _read(self.path)
        except FileNotFoundError:
            return
        if holder is not None and holder.get("token") == self.token:
            os.unlink(self.path)

    def __enter__(self) -> "ZooLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_RANK_RE = re.compile(r"build\.rank(\d+)of(\d+)\.lock")


def check_other_writers(zoo_dir: Path, own: str, world_size: int | None) -> None:
    """Refuse when a live writer that conflicts with us holds another lock of ``zoo_dir``: the
    main writer (``world_size`` None) conflicts with every rank; a rank conflicts with the main
    writer and with ranks of another world size. Stale locks found on the way are removed."""
    zoo_dir = Path(zoo_dir)
    for name in lock_names(zoo_dir):
        match = _RANK_RE.fullmatch(name)
        if name == own or (world_size is not None and match and int(match.group(2)) == world_size):
            continue
        other = ZooLock(zoo_dir, name)
        try:
            other._handle_existing()  # raises for a live holder, takes a stale lock away
        except ZooLockedError as err:
            raise ZooLockedError(f"{err} (a conflicting writer of this zoo)") from None
