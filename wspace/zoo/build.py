"""The batched zoo builder: the K networks of a chunk train as one batched computation.

Every parameter tensor has a leading model dimension; each model has its own task, its own data
stream, its own optimiser state and its own generators, seeded from (zoo seed, model index). So a
chunk of K models gives what K single-model builds with the same seeds give (to float rounding),
and a build split into chunks, resumed, or sharded over ranks gives the same zoo.

On CPU a chunk trains in groups of CPU_GROUP_SIZE models, each group one batched computation,
spread over one single-threaded worker process per core: on these small per-step tensors that
beats splitting every op across cores (OpenMP) or threads (the GIL). Groups never exchange data,
so the zoo depends on neither the group size nor the number of workers.

    config = preset_config("formal_languages", "quick", num_models=64)
    zoo = build_zoo(config, "zoos/fl", progress=print)
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import numpy as np
import torch
from einops import rearrange

from wspace_core import plugins
from wspace_core.architecture import Architecture, Sizes
from wspace.config import PAPER_SCHEDULE, ZooSettings, check_device, zoo_settings
from wspace.presets import PAPER_LR_POINTS, PAPER_SNAPSHOTS, PAPER_STEPS
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, TaskFamily, TrainingSchedule
from wspace_core.validators import non_negative_int, positive_int
from wspace.zoo.manifest import metadata_columns
from wspace.zoo.store import Zoo, ZooWriter
from wspace.zoo.train import GroupSpec, Snapshots, derive_seed, split_groups, train_group
import wspace.workers as workers_module
from wspace.workers import LOST_CHECK_S, TaskPids, default_workers, start_worker

#: seconds between progress reports while a chunk trains
PROGRESS_INTERVAL_S = 0.5
#: seconds between checks that no worker process was killed while its group trained
WORKER_CHECK_S = LOST_CHECK_S
#: models per batched group on CPU: small enough that a step's tensors stay in cache (measured
#: fastest per core among 8, 16, 32, 64 for the 2-layer hidden-32 LSTM; benchmarks/zoo_build.py)
CPU_GROUP_SIZE = 16


def _fractions(instance, attribute, value):
    if (len(value) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in value)
            or not abs(sum(value) - 1) < 1e-6):
        raise WspaceError(f"split_fractions must be three non-negative numbers (train, validation, ood) "
                          f"summing to 1, got {value!r}")


def _schedule(instance, attribute, value):
    if not isinstance(value, TrainingSchedule):
        raise WspaceError(f"schedule must be a wspace_core.task.TrainingSchedule, got {type(value).__name__}")
    if not isinstance(value.steps, int) or value.steps < 1:
        raise WspaceError(f"the schedule needs at least 1 training step, got {value.steps!r}")
    if not isinstance(value.batch_size, int) or value.batch_size < 1:
        raise WspaceError(f"batch_size must be a positive integer, got {value.batch_size!r}")
    snaps = list(value.snapshot_steps)
    if not snaps or snaps != sorted(set(snaps)) or snaps[0] < 0 or snaps[-1] > value.steps:
        raise WspaceError(f"snapshot_steps must be increasing steps in 0..{value.steps}, got {snaps}")
    points = [s for s, _ in value.lr_points]
    if not points or points != sorted(set(points)):
        raise WspaceError(f"lr_points must be (step, lr) pairs at increasing steps, got {value.lr_points}")


@attrs.frozen
class ZooConfig:
    """How a zoo is built; stored in the manifest (all but ``device`` is part of its fingerprint).

    ``data_block``: training batches are drawn ``data_block`` steps at a time per model (sampling
    cost amortised); it changes which examples a model sees, so it is part of the zoo."""

    task: str
    arch: str = "lstm"
    task_settings: dict[str, Any] = attrs.field(factory=dict)
    hidden_size: int = attrs.field(default=32, validator=positive_int)
    num_layers: int = attrs.field(default=2, validator=positive_int)
    num_models: int = attrs.field(default=96, validator=positive_int)
    chunk_size: int = attrs.field(default=96, validator=positive_int)
    schedule: TrainingSchedule = attrs.field(
        factory=lambda: TrainingSchedule(steps=PAPER_STEPS, snapshot_steps=PAPER_SNAPSHOTS),
        validator=_schedule)
    num_rollouts: int = attrs.field(default=100, validator=positive_int)
    seed: int = attrs.field(default=0)
    split_fractions: tuple[float, float, float] = attrs.field(default=(0.7, 0.15, 0.15), converter=tuple,
                                                              validator=_fractions)
    device: str = attrs.field(default="cpu", validator=check_device)
    data_block: int = attrs.field(default=10, validator=positive_int)

    def __attrs_post_init__(self):
        non_negative_int.require("seed", self.seed)
        if self.chunk_size > self.num_models:
            raise WspaceError(f"chunk_size ({self.chunk_size}) cannot exceed num_models ({self.num_models}); "
                              f"lower chunk_size")


@attrs.frozen
class BuildProgress:
    """Where a build stands; ``model_steps_*`` count the chunks this call builds."""

    model_steps_done: int
    model_steps_total: int
    chunks_done: int
    chunks_total: int
    elapsed_s: float


def scaled_schedule(steps: int, batch_size: int = 32, weight_decay: float = 1e-4,
                    snapshot_fractions: Sequence[float] | str = PAPER_SCHEDULE,
                    lr_fractions: Sequence[tuple[float, float]] | str = PAPER_SCHEDULE) -> TrainingSchedule:
    """The paper's schedule scaled to ``steps``: its 9 snapshot steps and its learning-rate
    points (0.01 → 0.003 at half → 0.0003 at the end) at the same fractions of training
    (snapshots that round onto the same step merge). ``snapshot_fractions`` and ``lr_fractions``
    ((fraction, lr) pairs) replace the paper's points (``PAPER_SCHEDULE``: keep them)."""
    positive_int.require("steps", steps)
    if snapshot_fractions == PAPER_SCHEDULE:
        snaps = sorted({round(s * steps / PAPER_STEPS) for s in PAPER_SNAPSHOTS})
    else:
        snaps = sorted({round(f * steps) for f in snapshot_fractions})
    points = ([(round(s * steps / PAPER_STEPS), v) for s, v in PAPER_LR_POINTS] if lr_fractions == PAPER_SCHEDULE
              else [(round(f * steps), v) for f, v in lr_fractions])
    lr, last = [], -1
    for s, v in points:
        at = max(s, last + 1)
        lr.append((at, v))
        last = at
    return TrainingSchedule(steps=steps, snapshot_steps=tuple(snaps), batch_size=batch_size,
                            lr_points=tuple(lr), weight_decay=weight_decay)


def preset_config(task: str, preset: str = "quick", **overrides: Any) -> ZooConfig:
    """The zoo config of ``preset`` for ``task`` (``wspace.presets``), with ``overrides`` winning:
    any ZooConfig field, or ``steps`` (snapshot steps and learning-rate points then scale with
    it). ``task_settings`` overrides merge into the preset's settings for the family.
    A preset chunk larger than an overridden ``num_models`` shrinks to it."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "schedule" in overrides and "steps" in overrides:
        raise WspaceError("give either steps or schedule, not both")
    arch, device = overrides.pop("arch", "lstm"), overrides.pop("device", "cpu")
    schedule = overrides.pop("schedule", None)
    return zoo_config(task, zoo_settings(task, preset, device, overrides), arch, device, schedule)


def recorded_task_settings(task: str, task_settings: dict[str, Any]) -> dict[str, Any]:
    """``task_settings`` as the family records them (``TaskFamily.recorded_settings``), so an
    explicit default names the same zoo as none; unchanged for a family no plugin registers."""
    families = plugins.task_families()
    return families.get(task).recorded_settings(task_settings) if task in families else dict(task_settings)


def zoo_config(task: str, settings: ZooSettings, arch: str, device: str,
               schedule: TrainingSchedule | None = None) -> ZooConfig:
    """The ZooConfig of a run's zoo settings: the schedule is the paper's scaled to
    ``settings.steps`` unless one is given."""
    values = attrs.asdict(settings, recurse=False)
    values["task_settings"] = recorded_task_settings(task, values["task_settings"])
    steps, snapshot_fractions, lr_fractions = (values.pop(k) for k in ("steps", "snapshot_fractions", "lr_fractions"))
    schedule = schedule or scaled_schedule(steps, snapshot_fractions=snapshot_fractions, lr_fractions=lr_fractions)
    return ZooConfig(task=task, arch=arch, device=device, schedule=schedule, **values)


# ---- tasks, components ------------------------------------------------------------------------


def assign_tasks(task: TaskFamily, config: ZooConfig) -> tuple[np.ndarray, torch.Tensor]:
    """Every model's split (num_models,) int (index into SPLITS) and task row, fixed by the zoo
    seed alone. A family whose split rule is per task (``split_scope() == "task"``): split sizes
    from ``split_fractions``, models shuffled into them, tasks drawn within each split
    (``task.sample_tasks(n, generator, split=...)``). Per zoo ("zoo", the published protocol):
    every task drawn from all tasks, then ``task.split_zoo(tasks, split_fractions)``."""
    n = config.num_models
    if task.split_scope() == "zoo":
        gen = torch.Generator().manual_seed(derive_seed(config.seed, "tasks", "all"))
        tasks = torch.as_tensor(task.sample_tasks(n, gen, split=None), dtype=torch.float64)
        if tuple(tasks.shape) != (n, len(task.task_columns)):
            raise WspaceError(f"task family {task.name!r} sample_tasks returned shape {tuple(tasks.shape)}, "
                              f"expected ({n}, {len(task.task_columns)})")
        names = task.split_zoo(tasks, config.split_fractions)
        return np.array([SPLITS.index(name) for name in names], dtype=np.int64), tasks
    counts = [int(round(f * n)) for f in config.split_fractions]
    counts[0] = n - counts[1] - counts[2]
    if counts[0] < 0:
        counts[1] += counts[0]
        counts[0] = 0
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(config.seed, "splits")))
    split = np.empty(n, dtype=np.int64)
    tasks = torch.empty(n, len(task.task_columns), dtype=torch.float64)
    start = 0
    for index, (name, count) in enumerate(zip(SPLITS, counts)):
        models = order[start:start + count]
        start += count
        split[models.numpy()] = index
        if count:
            gen = torch.Generator().manual_seed(derive_seed(config.seed, "tasks", name))
            drawn = torch.as_tensor(task.sample_tasks(count, gen, split=name), dtype=torch.float64)
            if tuple(drawn.shape) != (count, len(task.task_columns)):
                raise WspaceError(f"task family {task.name!r} sample_tasks returned shape {tuple(drawn.shape)}, "
                                  f"expected ({count}, {len(task.task_columns)})")
            tasks[models] = drawn
    return split, tasks


def task_for(config: ZooConfig) -> TaskFamily:
    return plugins.task_families().get(config.task)(**config.task_settings)


def architecture_for(config: ZooConfig, task: TaskFamily) -> Architecture:
    sizes = Sizes(task.input_size, config.hidden_size, task.output_size, config.num_layers)
    return plugins.architectures().get(config.arch)(sizes)


def manifest_base(config: ZooConfig, arch: Architecture, task: TaskFamily) -> dict[str, Any]:
    return {
        "architecture": arch.describe(), "task": task.describe(),
        "build": attrs.asdict(config), "snapshot_steps": list(config.schedule.snapshot_steps),
        "num_models": config.num_models,
        "metadata_columns": metadata_columns(task),
    }


# ---- running groups: in this process, or in worker processes -----------------------------------


class _InProcess:
    """Groups trained one after another in this process (exceptions and Ctrl-C surface at once).
    On CPU with one torch thread, as in the workers: a group's per-step ops are too small to
    split across cores, and OpenMP's barriers stall badly whenever another process holds a core."""

    def __init__(self, arch: Architecture, task: TaskFamily):
        self.arch, self.task = arch, task

    def run(self, specs: list[GroupSpec], on_steps: Callable[[int], None]) -> list[Snapshots]:
        done = [0] * len(specs)
        last = [time.perf_counter()]
        results = []
        threads = torch.get_num_threads()
        if all(str(spec.device).startswith("cpu") for spec in specs):
            torch.set_num_threads(1)
        try:
            for index, spec in enumerate(specs):
                def tick(steps: int, _i=index, _k=len(spec.models)) -> None:
                    done[_i] = steps * _k
                    now = time.perf_counter()
                    if now - last[0] >= PROGRESS_INTERVAL_S:
                        last[0] = now
                        on_steps(sum(done))
                results.append(train_group(self.arch, self.task, spec, tick))
        finally:
            torch.set_num_threads(threads)
        return results

    def close(self, terminate: bool = False) -> None:
        pass


_worker: dict[str, Any] = {}


def _worker_init(arch: Architecture, task: TaskFamily, counters, pids: TaskPids, parent_pid: int) -> None:
    start_worker(parent_pid, pids)
    _worker.update(arch=arch, task=task, counters=counters)


def _worker_train(index: int, spec: GroupSpec) -> Snapshots:
    counters, k = _worker["counters"], len(spec.models)

    def tick(steps: int) -> None:
        counters[index] = steps * k

    workers_module.task_pids.started(index)
    snapshots = train_group(_worker["arch"], _worker["task"], spec, tick)
    workers_module.task_pids.done(index)
    return snapshots


class _ProcessPool:
    """Groups trained side by side in ``workers`` single-threaded processes (spawned once per
    build). Separate processes, not threads: thousands of tiny ops per step would serialise on
    the GIL, and OpenMP's per-op barriers stall whenever another process takes a core."""

    def __init__(self, arch: Architecture, task: TaskFamily, workers: int, max_groups: int):
        ctx = mp.get_context("spawn")
        self.counters = ctx.Array("q", max_groups, lock=False)
        self.pids = TaskPids(ctx, max_groups)  # a worker killed outright: an error, not a wait forever
        self.pool = ctx.Pool(workers, initializer=_worker_init,
                             initargs=(arch, task, self.counters, self.pids, os.getpid()))

    def run(self, specs: list[GroupSpec], on_steps: Callable[[int], None]) -> list[Snapshots]:
        for i in range(len(specs)):
            self.counters[i] = 0
            self.pids.done(i)
        pending = [self.pool.apply_async(_worker_train, (i, spec)) for i, spec in enumerate(specs)]
        reported, last = -1, time.perf_counter()
        self.pids.suspects, checked = set(), last
        while not all(r.ready() for r in pending):
            time.sleep(0.05)
            for r in pending:
                if r.ready() and not r.successful():
                    r.get()  # raises the worker's exception here
            if time.perf_counter() - checked >= WORKER_CHECK_S:
                checked = time.perf_counter()
                lost = self.pids.check(i for i, r in enumerate(pending) if not r.ready())
                if lost is not None:
                    models = specs[lost].models
                    raise WspaceError(
                        f"the worker process training models {models[0]}–{models[-1]} ended without a result "
                        f"(killed, or out of memory?); this chunk was not committed, the committed ones stay: "
                        f"rerun with --resume to finish (with fewer workers if memory is short)")
            done = sum(self.counters[i] for i in range(len(specs)))
            if done != reported and time.perf_counter() - last >= PROGRESS_INTERVAL_S:
                reported, last = done, time.perf_counter()
                on_steps(done)
        return [r.get() for r in pending]

    def close(self, terminate: bool = False) -> None:
        if terminate:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()


# ---- training a chunk --------------------------------------------------------------------------


def group_specs(config: ZooConfig, models: Sequence[int], tasks: torch.Tensor, group_size: int) -> list[GroupSpec]:
    """The chunk's models in contiguous groups of at most ``group_size``."""
    models = list(models)
    count = -(-len(models) // group_size)
    return [GroupSpec(models=[models[i] for i in group], tasks=tasks[[models[i] for i in group]],
                      seed=config.seed, schedule=config.schedule, num_rollouts=config.num_rollouts,
                      device=config.device, data_block=config.data_block)
            for group in split_groups(len(models), count)]


def train_chunk(config: ZooConfig, arch: Architecture, task: TaskFamily, models: Sequence[int],
                split: np.ndarray, tasks: torch.Tensor, group_size: int | None = None,
                runner=None, on_steps: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train ``models`` (global indices) and return the chunk's arrays, rows in (model, snapshot)
    order. Groups of ``group_size`` models (default: all) are each one batched computation;
    ``runner`` (default: this process) runs them; ``on_steps(model_steps_done)`` reports."""
    models = list(models)
    specs = group_specs(config, models, tasks, group_size or len(models))
    runner = runner or _InProcess(arch, task)
    parts = runner.run(specs, on_steps or (lambda done: None))
    return _chunk_arrays(config, task, models, split, tasks, parts)


def _chunk_arrays(config: ZooConfig, task: TaskFamily, models: list[int], split: np.ndarray,
                  tasks: torch.Tensor, parts: list[Snapshots]) -> dict[str, np.ndarray]:
    """Per-group snapshots (S, Kg, ...) -> the chunk's rows (K·S, ...) in (model, snapshot) order."""
    def rows(name: str) -> np.ndarray:
        stacked = np.concatenate([getattr(p, name) for p in parts], axis=1)  # (S, K, ...)
        return np.ascontiguousarray(rearrange(stacked, "s m ... -> (m s) ..."))

    steps = np.asarray(config.schedule.snapshot_steps, dtype=np.float64)
    S, K = len(steps), len(models)
    metadata = np.concatenate([
        np.repeat(np.asarray(models, dtype=np.float64), S)[:, None],  # model
        np.tile(np.arange(S, dtype=np.float64), K)[:, None],  # snapshot
        np.tile(steps, K)[:, None],  # step
        np.repeat(split[models].astype(np.float64), S)[:, None],  # split
        np.repeat(tasks[models].numpy(), S, axis=0),  # task columns
        rows("metrics"),  # metric columns
    ], axis=1)
    return {"weights": rows("weights"), "rollout_inputs": rows("rollout_inputs"),
            "rollout_outputs": rows("rollout_outputs"), "metadata": metadata}


# ---- building a zoo ----------------------------------------------------------------------------


def build_zoo(config: ZooConfig, out: str | Path, resume: bool = False,
              progress: Callable[[BuildProgress], None] | None = None,
              rank: int = 0, world_size: int = 1, workers: int | None = None,
              group_size: int | None = None, threads: int | None = None) -> Zoo | None:
    """Build the zoo ``config`` describes at ``out`` and return it opened.

    ``resume``: continue an interrupted build of the same config, skipping committed chunks (the
    result equals an uninterrupted build). ``rank``/``world_size``: build only the chunks with
    ``chunk_id % world_size == rank`` into this rank's shard and return None (merge shards with
    ``wspace.zoo.merge_zoos``).

    Execution only (the zoo does not depend on them): a chunk trains in groups of ``group_size``
    models, each group one batched computation (default: CPU_GROUP_SIZE on CPU, the whole chunk
    on an accelerator), spread over ``workers`` processes (default: one per CPU core, 1 on an
    accelerator; 1 trains in this process). ``progress`` gets a BuildProgress every
    PROGRESS_INTERVAL_S and after each chunk. Ctrl-C, or an exception from ``progress``, stops
    the build: committed chunks stay, the lock is released, the exception propagates.
    ``threads`` is the former name of ``workers``.

    Worker processes are spawned: a script that calls this at import time needs the usual
    ``if __name__ == "__main__":`` guard (or ``workers=1``)."""
    workers, group_size = _execution(config, rank, world_size, workers, group_size, threads)
    task = task_for(config)
    arch = architecture_for(config, task)
    split, tasks = assign_tasks(task, config)
    shard = (rank, world_size) if world_size > 1 else None
    groups_per_chunk = -(-config.chunk_size // group_size)
    workers = min(workers, groups_per_chunk)
    start = time.perf_counter()
    runner = None
    with ZooWriter.create(out, manifest_base(config, arch, task), resume=resume, shard=shard) as writer:
        try:
            pending = writer.pending_chunks()
            if pending:
                runner = (_ProcessPool(arch, task, workers, groups_per_chunk) if workers > 1
                          else _InProcess(arch, task))
            train = functools.partial(train_chunk, config, arch, task, split=split, tasks=tasks,
                                      group_size=group_size, runner=runner)
            _commit_chunks(writer, pending, train, config.schedule.steps, progress, start)
        except BaseException:
            if runner is not None:
                runner.close(terminate=True)
            raise
        if runner is not None:
            runner.close()
        if shard is not None:
            return None
        return writer.finalize()


def _execution(config: ZooConfig, rank: int, world_size: int, workers: int | None, group_size: int | None,
               threads: int | None) -> tuple[int, int]:
    """A build's worker processes and models per group, defaults filled in and checked."""
    if threads is not None:
        if workers is not None and workers != threads:
            raise WspaceError("give workers (or its former name threads), not both")
        workers = threads
    if not (isinstance(world_size, int) and isinstance(rank, int) and 0 <= rank < world_size):
        raise WspaceError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    on_cpu = str(config.device).startswith("cpu")
    workers = default_workers(config.device) if workers is None else workers
    group_size = (CPU_GROUP_SIZE if on_cpu else config.chunk_size) if group_size is None else group_size
    positive_int.require("workers", workers)
    positive_int.require("group_size", group_size)
    return workers, group_size


def _commit_chunks(writer: ZooWriter, pending: list[int], train: Callable[..., dict[str, np.ndarray]],
                   steps: int, progress: Callable[[BuildProgress], None] | None, start: float) -> None:
    """Train (``train(models, on_steps=...)``) and commit the ``pending`` chunks one after another,
    reporting progress since ``start``."""
    chunks_total = len(writer.chunk_ids())
    total = sum(len(writer.chunk_models(c)) for c in pending) * steps
    done_before = 0

    def report(done: int, chunks_done: int) -> None:
        if progress is not None:
            progress(BuildProgress(done, total, chunks_done, chunks_total, time.perf_counter() - start))

    for i, chunk in enumerate(pending):
        models = list(writer.chunk_models(chunk))
        chunks_done = chunks_total - len(pending) + i
        arrays = train(models, on_steps=lambda n, _d=done_before, _c=chunks_done: report(_d + n, _c))
        writer.commit_chunk(chunk, arrays)
        done_before += len(models) * steps
        report(done_before, chunks_done + 1)
