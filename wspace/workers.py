"""Worker processes of a wspace command (the zoo builder's pool, the baseline trained alongside
an encoder, the child runs of `wspace compare`): spawned, single-threaded, and gone when the
command that spawned them is gone."""

from __future__ import annotations

import os
import signal
import threading
import time

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


def start_worker(parent_pid: int) -> None:
    """What every worker process does first: Ctrl-C is left to the parent (which stops its
    workers), one torch thread (no OpenMP barriers on tiny per-step ops), and the watchdog."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    watch_parent(parent_pid)
