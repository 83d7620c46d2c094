"""The builder's lock: one writer per zoo directory.

The lock is a small file (``build.lock``, or ``build.rankRofW.lock`` for one rank of a build whose
ranks share a directory) holding JSON about its holder (pid, host, start time). Liveness rests on
an OS file lock, not on the pid: the holder keeps an exclusive ``flock`` on the file for the whole
build, and the kernel drops it the moment the holder dies, however it dies. So a lock whose
``flock`` is held belongs to a live builder even when its pid means nothing here (a container
sharing the directory runs in another PID namespace), and a lock of this host whose ``flock`` is
free is stale: it is taken over with a warning. A lock from another host whose ``flock`` is free
cannot be judged (a network filesystem may not share file locks between hosts) and is refused with
the way out (delete it if that build is dead).

Locks written by an older wspace (no ``"lock": "flock"`` in the JSON) and platforms without
``fcntl`` fall back to the pid rule: the lock file is created with ``O_CREAT | O_EXCL``, and a
lock of this host whose pid is gone (or now belongs to a younger process) is stale.
"""

from __future__ import annotations

import errno
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

try:
    import fcntl
except ImportError:  # Windows: the pid rule alone
    fcntl = None

LOCK_NAME = "build.lock"
#: lock of the writer of shard r of W when the ranks of a multi-machine build share one directory
RANK_LOCK_PATTERN = "build.rank*.lock"


def rank_lock_name(rank: int, world_size: int) -> str:
    return f"build.rank{rank}of{world_size}.lock"


def is_lock_name(name: str) -> bool:
    return name == LOCK_NAME or (name.startswith("build.rank") and name.endswith(".lock"))


#: recorded in the lock file by a holder that keeps an OS file lock (``flock``) on it
LOCK_KIND = "flock"
#: pid rule only: an unreadable (empty, half-written) lock older than this is treated as stale
_UNREADABLE_GRACE_S = 30.0
#: a held ``flock`` is retried this often, this far apart, before the holder is judged live (a
#: ``wspace zoo info`` probing the lock holds it for a moment)
_FLOCK_TRIES, _FLOCK_PAUSE_S = 10, 0.02
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: what ``flock`` raises on a filesystem without file locks
_NO_FILE_LOCKS = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS")
                  if hasattr(errno, name)}

log = logging.getLogger(__name__)


class ZooLockedError(WspaceError):
    """Another live process holds the zoo's lock."""


class _NoFileLocks(Exception):
    """The lock's filesystem has no OS file locks: the pid rule applies."""


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
    """The pid rule: True/False for a lock of this host; None when it cannot be told (another host)."""
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


def _try_flock(fd: int, exclusive: bool = True) -> bool | None:
    """Take the OS file lock of ``fd`` without blocking (a few tries); False when another holds it,
    None when the filesystem has no file locks (then the pid rule applies)."""
    for attempt in range(_FLOCK_TRIES):
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _FLOCK_TRIES:
                time.sleep(_FLOCK_PAUSE_S)
        except OSError as err:
            if err.errno in _NO_FILE_LOCKS:
                return None
            raise
    return False


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder unlinks it)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _read_fd(fd: int) -> dict | None:
    """The JSON a lock file holds: {} when empty, None when unreadable."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while block := os.read(fd, 65536):
        chunks.append(block)
    text = b"".join(chunks)
    if not text.strip():
        return {}
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def judge(holder: dict | None, flock_free: bool | None) -> bool | None:
    """Whether the holder of a lock is running: True, False, or None (cannot be told).

    ``flock_free``: whether the OS file lock of the lock file could be taken (None: no file
    locks on this platform). A held file lock means a live holder, whatever its pid; a free one
    means a dead holder when the lock was written on this host by a holder that keeps the file
    lock. Other locks (an older wspace's, or without file locks) are judged by their pid."""
    if flock_free is False:
        return True
    if not holder:  # empty or unreadable
        return False if flock_free else None
    if holder.get("lock") == LOCK_KIND and flock_free:
        return False if holder.get("host") == socket.gethostname() else None
    return holder_alive(holder)


def lock_alive(zoo_dir: Path, name: str, holder: dict | None) -> bool | None:
    """``judge`` for the lock ``name`` of ``zoo_dir`` now (probes its file lock for a moment)."""
    path = Path(zoo_dir) / name
    if fcntl is None:
        return holder_alive(holder) if holder else None
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return holder_alive(holder) if holder else None
    try:
        free = _try_flock(fd, exclusive=False)
    finally:
        os.close(fd)  # drops the shared lock, if taken
    if free is None:
        return holder_alive(holder) if holder else None
    return judge(holder, free)


def _own_process(holder: dict) -> bool:
    """Whether the pid a holder recorded is that very process in this machine's process list."""
    if holder.get("host") != socket.gethostname():
        return False
    pid, ticks = holder.get("pid"), holder.get("start_ticks")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    return ticks is None or _process_start_ticks(pid) in (None, ticks)


class ZooLock:
    """``with ZooLock(dir):`` holds the lock; ``release()`` removes it only if it is still ours.
    ``name`` picks the lock file (``rank_lock_name`` for one rank of a shared-directory build).
    Where ``fcntl`` exists the holder keeps an exclusive ``flock`` on the lock file until it
    releases it (or dies)."""

    def __init__(self, zoo_dir: Path | str, name: str = LOCK_NAME):
        self.zoo_dir = Path(zoo_dir)
        self.name = name
        self.path = self.zoo_dir / name
        self.token = uuid.uuid4().hex
        self.held = False
        self._fd: int | None = None

    def _info(self, flock: bool) -> dict:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "start_ticks": _process_start_ticks(os.getpid()), "token": self.token}
        if flock:  # readers may judge this lock by its file lock
            info["lock"] = LOCK_KIND
        return info

    def acquire(self) -> "ZooLock":
        return self._acquire_flock() if fcntl is not None else self._acquire_exclusive()

    # ---- with OS file locks ----------------------------------------------------------------------

    def _open(self, create: bool) -> tuple[int, bool] | None:
        """(fd, whether we created the file), or None when there is no lock file (``create`` False)."""
        flags = os.O_RDWR | _NOFOLLOW
        while True:
            try:
                if create:
                    try:
                        return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
                    except FileExistsError:
                        pass
                return os.open(self.path, flags), False
            except FileNotFoundError:
                if not create:
                    return None
            except OSError as err:
                if self.path.is_symlink():
                    raise WspaceError(f"{self.path} is a symbolic link; a zoo's lock must be a plain file: "
                                      f"remove the link, then run the command again") from None
                raise

    def _hold_file_lock(self, create: bool) -> tuple[int, bool] | None:
        """Open the lock file (creating it when ``create``) and take its ``flock``: (fd, whether we
        created the file), the file lock held on the file the path names now. None when there is
        no lock file (``create`` False) or it kept changing hands. Refuses a live holder; raises
        ``_NoFileLocks`` (having closed the file, and removed it if we created it) when the
        filesystem has no file locks."""
        for _ in range(10):
            opened = self._open(create)
            if opened is None:
                return None
            fd, created = opened
            try:
                locked = _try_flock(fd)
                if locked is False:
                    self._refuse(_read_fd(fd) or {}, alive=True)
                if locked and _same_file(fd, self.path):
                    return fd, created
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # no file locks here, or its holder released it meanwhile: start again
            if locked is None:
                if created:
                    os.unlink(self.path)
                raise _NoFileLocks()
        return None

    def _acquire_flock(self) -> "ZooLock":
        try:
            held = self._hold_file_lock(create=True)
        except _NoFileLocks:
            return self._acquire_exclusive()
        if held is None:
            raise ZooLockedError(f"could not take the lock {self.path}: it keeps changing hands; another "
                                 f"process is building zoo {self.zoo_dir}: wait for it")
        fd, created = held
        try:
            if not created:
                self._judge_existing(fd, _read_fd(fd))
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(self._info(flock=True)).encode("utf-8"))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.held = True
        return self

    def _judge_existing(self, fd: int, holder: dict | None) -> None:
        """We hold the file lock of a lock file someone left: take it over, or refuse."""
        alive = judge(holder, True)
        if alive is False:
            if holder:
                self._warn(f"stale lock of pid {holder.get('pid')} on {holder.get('host')} "
                           f"(since {holder.get('since')}), which is no longer running")
            elif holder is None:
                self._warn(f"unreadable lock file {self.path}")
            return
        self._refuse(holder or {}, alive)

    def _refuse(self, holder: dict, alive: bool | None) -> None:
        if not holder:  # its holder has the file lock but has not written who it is yet
            raise ZooLockedError(f"zoo {self.zoo_dir} is being locked by another process right now "
                                 f"({self.path} is still empty); wait a moment and run the command again")
        if alive is None:
            fix = f"if that build is dead, delete {self.path}"
        elif _own_process(holder):
            fix = f"stop it (kill {holder.get('pid')})"
        else:
            fix = ("stop it where it runs (its pid is not a process of this machine's view: another "
                   "container or PID namespace sharing this directory holds the lock)")
        raise ZooLockedError(f"{describe_holder(self.zoo_dir, holder, self.name)}; wait for it to finish, "
                             f"or {fix}, and run the command again (another build holds the lock "
                             f"{self.path})")

    def _warn(self, what: str) -> None:
        message = f"taking over the {what}: zoo {self.zoo_dir}"
        log.warning(message)
        warnings.warn(message, stacklevel=5)

    def remove_if_stale(self) -> None:
        """Another writer's lock: remove it when its holder is dead (saying so); raise
        ``ZooLockedError`` when it is live or cannot be judged; nothing when there is none."""
        if fcntl is None:
            self._handle_existing()
            return
        try:
            held = self._hold_file_lock(create=False)
        except _NoFileLocks:
            self._handle_existing()
            return
        if held is None:
            return
        fd = held[0]
        try:
            self._judge_existing(fd, _read_fd(fd))
            os.unlink(self.path)
        finally:
            os.close(fd)

    # ---- without OS file locks: O_EXCL and the pid rule ------------------------------------------

    def _acquire_exclusive(self) -> "ZooLock":
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._info(flock=False), f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise ZooLockedError(f"could not take the lock {self.path}: it keeps changing hands; another "
                             f"process is building zoo {self.zoo_dir}: wait for it")

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
        self._refuse(holder, alive)

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
                                 f"{moved.get('host')}; wait for it, and run the command again")
        os.unlink(aside)
        self._warn(what)

    # ---- releasing -------------------------------------------------------------------------------

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if _same_file(fd, self.path):
                    os.unlink(self.path)  # while we still hold the file lock
            except OSError:
                pass  # a read-only or vanished directory: the file lock goes with the descriptor
            finally:
                os.close(fd)
            return
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
            other.remove_if_stale()  # raises for a live holder, takes a stale lock away
        except ZooLockedError as err:
            raise ZooLockedError(f"{err} (a conflicting writer of this zoo)") from None
