"""The no-information baseline of a run: the run's pretraining with an encoder whose z carries
nothing about the network (``wspace.reporting.roles.baseline_encoder``), scored on the validation
networks the encoder is scored on, and cached on disk by zoo, pretraining configuration, z size,
seed and preset (a second run on the same zoo reuses it).

When it trains (``RunConfig.baseline``):

- "before": in this process, before the encoder (every rank under torchrun);
- "alongside" (the default): in one spawned single-threaded worker process while this process
  trains the encoder with one torch thread fewer, taking the thread back when the worker is done.
  On a small CPU the two share the cores better than one process using them all in turn (the
  baseline's steps are too small to keep two threads busy), and the run takes minutes less. It
  falls back to "before" off the CPU, under torchrun, and with a single torch thread
  (``runs_alongside``). Both trainings draw from their own seeded generators, so what changes is
  float rounding alone: a different torch thread count sums in a different order.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Callable

import attrs
import torch

from wspace.config import RunConfig
from wspace.evaluation.fidelity import emulation_fidelity, fidelity_summary
from wspace.experiment.records import result_summary
from wspace.files import json_digest
from wspace.reporting.roles import baseline_encoder
from wspace.training.distributed import DistContext
from wspace.training.pretrain import pretrain
import wspace.workers as workers_module
from wspace.workers import LOST_CHECK_S, TaskPids, start_worker
from wspace_core.registry import WspaceError

Progress = Callable | None


def baseline_path(config: RunConfig, zoo_fingerprint: str) -> Path:
    """Where the baseline of ``config`` on the zoo ``zoo_fingerprint`` is cached."""
    key = json_digest({"zoo": zoo_fingerprint, "pretrain": attrs.asdict(config.pretrain), "z_dim": config.encoder.z_dim,
                       "seed": config.seed, "preset": config.preset})
    return Path(config.out_dir) / "baselines" / f"{key}.json"


def train_baseline(zoo, config: RunConfig, progress: Progress = None, score: bool = True) -> dict:
    """Pretrain the no-information encoder as ``config`` pretrains its encoder; its result summary
    and (``score``) its emulation fidelity on the validation networks, drawn as the encoder's are."""
    result = pretrain(zoo, baseline_encoder(), config.pretrain, z_dim=config.encoder.z_dim, preset=config.preset,
                      seed=config.seed, device=config.device, progress=progress)
    summary = result_summary(result)
    if score:
        fidelity = emulation_fidelity(result, zoo, "validation", config.device, seed=config.seed)
        summary["emulation_fidelity"] = fidelity_summary(fidelity)
    return summary


def runs_alongside(config: RunConfig, dist: DistContext) -> bool:
    """Whether ``config``'s baseline trains in a worker beside the encoder: asked for, on the CPU,
    one process, and a torch thread to spare."""
    return (config.baseline == "alongside" and str(config.device).startswith("cpu") and not dist.enabled
            and torch.get_num_threads() >= 2)


class ReadyBaseline:
    """A baseline already there: read from the cache, or trained before the encoder."""

    def __init__(self, summary: dict):
        self.summary = summary

    def progress(self, inner: Progress) -> Progress:
        return inner

    def result(self) -> dict:
        return self.summary

    def close(self) -> None:
        pass


class BaselineAlongside:
    """The baseline training in a worker process (started here); this process gives up one torch
    thread until the worker is done. ``progress`` wraps the encoder's progress callback so the
    thread comes back at the first step after that; ``result`` waits for the worker and hands
    its summary to ``save``; ``close`` stops a worker still running (an error, Ctrl-C)."""

    def __init__(self, zoo_path: str | Path, config: RunConfig, save: Callable[[dict], None]):
        self.threads, self.save, self.summary = torch.get_num_threads(), save, None
        context = mp.get_context("spawn")
        self.pids = TaskPids(context, 1)  # the worker killed outright: an error, not a wait forever
        self.pool = context.Pool(1, initializer=start_worker, initargs=(os.getpid(), self.pids))
        self.pending = self.pool.apply_async(_worker_train, (str(zoo_path), config))
        torch.set_num_threads(self.threads - 1)

    def _take_back_thread(self) -> None:
        """Once the worker is done: its thread back, or its error raised now (not after the encoder)."""
        if torch.get_num_threads() != self.threads and self.pending.ready():
            if not self.pending.successful():
                self.pending.get()
            torch.set_num_threads(self.threads)

    def progress(self, inner: Progress) -> Progress:
        def report(update) -> None:
            self._take_back_thread()
            if inner is not None:
                inner(update)
        return report

    def result(self) -> dict:
        """The worker's summary (its error raised here), saved once."""
        if self.summary is None:
            self.summary = self._wait()
            self._take_back_thread()
            self.save(self.summary)
        return self.summary

    def _wait(self) -> dict:
        """The worker's summary once it comes; its process killed outright is an error, not a wait forever."""
        while True:
            try:
                return self.pending.get(timeout=LOST_CHECK_S)
            except mp.TimeoutError:
                if self.pids.check([0]) is not None:
                    raise WspaceError("the no-information baseline's worker process ended without a result "
                                      "(killed, or out of memory?); nothing of it was kept. Run again, or with "
                                      "--baseline before") from None

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
        torch.set_num_threads(self.threads)


def _worker_train(zoo_path: str, config: RunConfig) -> dict:
    from wspace.zoo.store import Zoo

    workers_module.task_pids.started(0)
    summary = train_baseline(Zoo.open(zoo_path, verify=False), config)
    workers_module.task_pids.done(0)
    return summary
