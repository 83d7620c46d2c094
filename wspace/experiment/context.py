"""The run context: what the steps of one run share — its configuration, the zoo it learns from,
where it tracks, writes and prints, and its place in a torchrun job. `wspace run` makes one and
passes it through its steps; `wspace compare` makes one and derives a child per encoder and seed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import attrs

from wspace.config import RunConfig
from wspace.files import write_json_atomic
from wspace.training import distributed
from wspace.training.distributed import DistContext

Echo = Callable[[str], None]


def silent(message: str) -> None:
    """The echo of ranks other than 0."""


@attrs.define
class RunContext:
    """One run's shared state. Under torchrun rank 0 alone prints, tracks and writes (``dist``);
    the other ranks get a disabled tracker, a silent echo and no progress bars, and train along."""

    config: RunConfig
    tracker: Any  # wspace.tracking.Tracker
    echo: Echo = print
    zoo_progress: Callable | None = None
    pretrain_progress: Callable | None = None
    dist: DistContext = attrs.field(factory=DistContext)
    zoo: Any = None  # wspace.zoo.Zoo, once ensured
    run_dir: Path | None = None
    mlflow_run_id: str | None = None
    started: float = attrs.field(factory=time.perf_counter)

    @classmethod
    def join(cls, config: RunConfig, echo: Echo = print, zoo_progress=None, pretrain_progress=None,
             tracker=None) -> "RunContext":
        """The context of a run in this process: under torchrun it joins the job first (one
        process: nothing to join); ``tracker`` defaults to the configuration's."""
        from wspace.tracking import Tracker

        started = time.perf_counter()
        dist = distributed.setup(config.device)
        if not dist.is_main:  # rank 0 alone prints, tracks and writes; the others train along
            tracker, echo, zoo_progress, pretrain_progress = Tracker.disabled(), silent, None, None
        tracker = tracker or Tracker(config.tracking_uri, config.experiment, enabled=config.tracking)
        return cls(config, tracker, echo, zoo_progress, pretrain_progress, dist, started=started)

    def child(self, run_dir: Path, **changes) -> "RunContext":
        """The context of a run on the same zoo and tracker with ``changes`` to the configuration."""
        return attrs.evolve(self, config=attrs.evolve(self.config, **changes), run_dir=run_dir, mlflow_run_id=None)

    @property
    def tracking(self) -> bool:
        """Whether the tracker reaches its store now (off, or the store went away: False)."""
        return bool(getattr(self.tracker, "active", False))

    def shared(self, value):
        """Rank 0's ``value`` on every rank (``value`` itself in one process)."""
        return distributed.broadcast_object(value, self.dist)

    def from_main(self, compute: Callable[[], Any]):
        """``compute()`` run by rank 0 alone (it reads or makes files), its value on every rank."""
        return self.shared(compute() if self.dist.is_main else None)

    def write_json(self, path: Path, data) -> None:
        """Write ``path`` atomically (its folder made if missing), by rank 0 alone."""
        if self.dist.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, data)
