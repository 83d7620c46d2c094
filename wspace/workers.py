"""Worker processes of a wspace command (the zoo builder's pool, the baseline trained alongside
an encoder, the child runs of `wspace compare`): spawned, single-threaded, and gone when the
command that spawned them is gone."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Iterable

import torch

#: how often a worker checks that the process that spawned it is still alive
PARENT_CHECK_S = 1.0


def _exit_when_orphaned(parent_pid: int) -> None:
    """The watchdog: a parent killed outright (SIGKILL, the OOM killer) cannot stop its workers,
    so a worker ends itself as soon as it is re-parented; nothing it computed is kept."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def watch_parent(parent_pid: int) -> None:
    """Start the watchdog of this worker process, whose parent is ``parent_pid``."""
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True,
                     name="wspace-parent-watch").start()


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: worker processes at most by default (each holds its own torch and pages of the zoo)
MAX_DEFAULT_WORKERS = 8


def default_workers(device: str) -> int:
    """Worker processes by default: one per CPU core (at most ``MAX_DEFAULT_WORKERS``) on the
    CPU; one on an accelerator, which runs the work itself."""
    if not str(device).startswith("cpu"):
        return 1
    return max(1, min(available_cores(), MAX_DEFAULT_WORKERS))


#: seconds between the parent's checks that no worker was killed while its task ran
LOST_CHECK_S = 1.0

#: this worker process's task table (``start_worker``); None in a parent
task_pids: "TaskPids | None" = None


def start_worker(parent_pid: int, pids: "TaskPids | None" = None) -> None:
    """What every worker process does first: Ctrl-C is left to the parent (which stops its
    workers), one torch thread (no OpenMP barriers on tiny per-step ops), the watchdog, and
    the pool's task table (``task_pids``) when it has one."""
    global task_pids
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    watch_parent(parent_pid)
    task_pids = pids


class TaskPids:
    """Which process runs each task of a worker pool. A worker killed outright (SIGKILL, the OOM
    killer) loses its task, and ``multiprocessing.Pool`` replaces the worker and waits for that
    task's result forever; with this, the parent sees it: a worker writes its pid when it starts
    task ``i`` (``started``) and 0 when it is done, and ``lost`` names the tasks whose process is
    gone. Share it with the workers through the pool's initializer arguments."""

    def __init__(self, context, tasks: int):
        self.pids = context.Array("q", tasks, lock=False)
        self.suspects: set[int] = set()  # the parent's: lost at the last check

    def started(self, index: int) -> None:
        self.pids[index] = os.getpid()

    def done(self, index: int) -> None:
        self.pids[index] = 0

    def lost(self, pending: Iterable[int]) -> list[int]:
        """The tasks among ``pending`` whose process has ended without finishing them."""
        return [i for i in pending if self.pids[i] and not _alive(self.pids[i])]

    def check(self, pending: Iterable[int]) -> int | None:
        """A task among ``pending`` lost at this check and the one before (a result still on its
        way to the parent is not taken for a loss), or None. Call it every ``LOST_CHECK_S``."""
        lost = set(self.lost(pending))
        confirmed, self.suspects = lost & self.suspects, lost
        return min(confirmed) if confirmed else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the number: ours is gone
        return False
    return True
