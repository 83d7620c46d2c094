"""The batched zoo builder: K networks of a chunk train as ONE computation.

Every parameter tensor has a leading model dimension; each model has its own task, its own data
stream, its own optimiser state and its own generators, seeded from (zoo seed, model index), so a
chunk of K models gives what K single-model builds with the same seeds give (to float tolerance),
and a build split into chunks, resumed, or sharded over ranks gives the same zoo.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import numpy as np
import torch
from einops import rearrange

from wspace_core import plugins
from wspace_core.architecture import Architecture, Params, Sizes
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, TaskFamily, TrainingSchedule
from wspace_core.zoo.store import Zoo, ZooWriter

PAPER_STEPS = 20_000
PAPER_SNAPSHOTS = (0, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
PAPER_LR_POINTS = ((0, 0.01), (10_000, 0.003), (20_000, 0.0003))


def _fractions(instance, attribute, value):
    if len(value) != 3 or any(v < 0 for v in value) or not abs(sum(value) - 1) < 1e-6:
        raise WspaceError(f"split_fractions must be three non-negative numbers summing to 1, got {value!r}")


def _positive(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WspaceError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen
class ZooConfig:
    """How a zoo is built; stored in the manifest (all but ``device`` is part of its fingerprint)."""

    task: str
    arch: str = "lstm"
    task_settings: dict[str, Any] = attrs.field(factory=dict)
    hidden_size: int = attrs.field(default=32, validator=_positive)
    num_layers: int = attrs.field(default=2, validator=_positive)
    num_models: int = attrs.field(default=96, validator=_positive)
    chunk_size: int = attrs.field(default=96, validator=_positive)
    schedule: TrainingSchedule = attrs.field(
        factory=lambda: TrainingSchedule(steps=PAPER_STEPS, snapshot_steps=PAPER_SNAPSHOTS))
    num_rollouts: int = attrs.field(default=100, validator=_positive)
    seed: int = 0
    split_fractions: tuple[float, float, float] = attrs.field(default=(0.7, 0.15, 0.15), converter=tuple,
                                                              validator=_fractions)
    device: str = "cpu"


@attrs.frozen
class BuildProgress:
    model_steps_done: int
    model_steps_total: int
    chunks_done: int
    chunks_total: int
    elapsed_s: float


def scaled_schedule(steps: int, batch_size: int = 32, weight_decay: float = 1e-4) -> TrainingSchedule:
    """The paper's schedule (snapshots and learning-rate points) scaled to ``steps``."""
    if not isinstance(steps, int) or steps < 1:
        raise WspaceError(f"steps must be a positive integer, got {steps!r}")
    snaps = sorted({round(s * steps / PAPER_STEPS) for s in PAPER_SNAPSHOTS})
    lr = tuple((round(s * steps / PAPER_STEPS), v) for s, v in PAPER_LR_POINTS)
    return TrainingSchedule(steps=steps, snapshot_steps=tuple(snaps), batch_size=batch_size,
                            lr_points=lr, weight_decay=weight_decay)


#: preset -> (ZooConfig fields, task settings per task family)
PRESETS: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {
    "smoke": (dict(num_models=12, chunk_size=6, steps=40, num_rollouts=8),
              {"formal_languages": {"num_eval_strings": 64}, "tiled_mnist": {"num_eval_images": 64}}),
    "quick": (dict(num_models=96, chunk_size=96, steps=2000, num_rollouts=100),
              {"formal_languages": {"num_eval_strings": 500}, "tiled_mnist": {"num_eval_images": 200}}),
    "paper": (dict(num_models=1000, chunk_size=250, steps=PAPER_STEPS, num_rollouts=100), {}),
}


def preset_config(task: str, preset: str = "quick", **overrides: Any) -> ZooConfig:
    """The zoo of a preset, with ``overrides`` (ZooConfig fields, or ``steps``) winning. When
    ``steps`` is given, snapshot steps and learning-rate points scale with it."""
    if preset not in PRESETS:
        raise WspaceError(f"unknown zoo preset {preset!r}; presets: {', '.join(PRESETS)}")
    fields, task_settings = PRESETS[preset]
    values = {k: v for k, v in fields.items()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    steps = values.pop("steps")
    known = {f.name for f in attrs.fields(ZooConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise WspaceError(f"unknown zoo setting(s) {', '.join(unknown)}; valid: steps, {', '.join(sorted(known))}")
    if "schedule" not in values:
        values["schedule"] = scaled_schedule(steps)
    settings = dict(task_settings.get(task, {}))
    settings.update(values.pop("task_settings", {}) or {})
    config = ZooConfig(task=task, task_settings=settings, **values)
    if config.chunk_size > config.num_models:
        config = attrs.evolve(config, chunk_size=config.num_models)
    return config


def _seed(*parts: Any) -> int:
    """A generator seed from plain parts, the same on every machine (no Python hash())."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _generators(seed: int, kind: str, models: Sequence[int], device: str = "cpu") -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(_seed(seed, kind, int(m))) for m in models]


def assign_tasks(task: TaskFamily, config: ZooConfig) -> tuple[np.ndarray, torch.Tensor]:
    """Every model's split (R,) int (index into SPLITS) and task row, fixed by the zoo seed alone."""
    n = config.num_models
    counts = [int(round(f * n)) for f in config.split_fractions]
    counts[0] = n - counts[1] - counts[2]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(config.seed, "splits")))
    split = np.empty(n, dtype=np.int64)
    tasks = torch.empty(n, len(task.task_columns), dtype=torch.float64)
    start = 0
    for index, (name, count) in enumerate(zip(SPLITS, counts)):
        models = order[start:start + count]
        start += count
        split[models.numpy()] = index
        if count:
            gen = torch.Generator().manual_seed(_seed(config.seed, "tasks", name))
            tasks[models] = task.sample_tasks(count, gen, split=name).to(torch.float64)
    return split, tasks


class BatchedAdamW:
    """AdamW over parameters with a leading model dimension; weight decay per model (M,).
    Elementwise, so M models in one tensor are updated exactly as M separate optimisers."""

    def __init__(self, params: Params, weight_decay: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.betas, self.eps = params, betas, eps
        self.decay = {k: weight_decay.to(p).reshape(-1, *([1] * (p.ndim - 1))) for k, p in params.items()}
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, p in self.params.items():
            g = grads[k]
            p.mul_(1 - lr * self.decay[k])
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v[k] / bc2).sqrt_().add_(self.eps)
            p.addcdiv_(self.m[k], denom, value=-lr / bc1)


def architecture_for(config: ZooConfig, task: TaskFamily) -> Architecture:
    sizes = Sizes(task.input_size, config.hidden_size, task.output_size, config.num_layers)
    return plugins.architectures().get(config.arch)(sizes)


def task_for(config: ZooConfig) -> TaskFamily:
    try:
        return plugins.task_families().get(config.task)(**config.task_settings)
    except TypeError as err:
        raise WspaceError(f"bad settings for task family {config.task!r}: {err}") from None


def manifest_base(config: ZooConfig, arch: Architecture, task: TaskFamily) -> dict[str, Any]:
    return {
        "architecture": arch.describe(), "task": task.describe(),
        "build": attrs.asdict(config), "snapshot_steps": list(config.schedule.snapshot_steps),
        "num_models": config.num_models,
        "metadata_columns": ["model", "snapshot", "step", "split", *task.task_columns, *task.metric_columns],
    }


def train_chunk(config: ZooConfig, arch: Architecture, task: TaskFamily, models: Sequence[int],
                split: np.ndarray, tasks: torch.Tensor, tick: Callable[[int], None] | None = None,
                data_block: int = 10) -> dict[str, np.ndarray]:
    """Train ``models`` as one batched computation; the chunk's arrays in (model, snapshot) order."""
    device = torch.device(config.device)
    schedule = config.schedule
    models = list(models)
    chunk_tasks = tasks[models]
    init_gens = _generators(config.seed, "init", models)
    params = {k: torch.cat(v).to(device) for k, v in zip(
        arch.layout.names, zip(*[arch.init(1, g).values() for g in init_gens]))}
    data_gens = _generators(config.seed, "data", models)
    eval_gens = _generators(config.seed, "eval", models)
    opt = BatchedAdamW(params, task.weight_decay(chunk_tasks, schedule))
    snapshots = set(schedule.snapshot_steps)
    weights, metrics, roll_in, roll_out = [], [], [], []
    block_x = block_y = None
    for step in range(schedule.steps + 1):
        if step in snapshots:
            with torch.no_grad():
                weights.append(arch.layout.flatten(params).cpu())
                m = task.evaluate(arch, params, chunk_tasks, eval_gens)
                metrics.append(torch.stack([m[c].double().cpu() for c in task.metric_columns], dim=1))
                x_r, y_r = task.rollouts(arch, params, chunk_tasks, config.num_rollouts, eval_gens)
                roll_in.append(x_r.cpu()), roll_out.append(y_r.cpu().half())
        if step == schedule.steps:
            break
        offset = step % data_block
        if offset == 0:  # one draw per block of steps per model, sliced per step
            block_x, block_y = task.training_batch(chunk_tasks, schedule.batch_size * data_block,
                                                   data_gens, device=device)
        sl = slice(offset * schedule.batch_size, (offset + 1) * schedule.batch_size)
        x, y = block_x[:, sl], block_y[:, sl]
        leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        outputs, _ = arch.forward(leaves, x)
        loss = task.training_loss(outputs, y).sum()  # each model's gradient is its own
        grads = torch.autograd.grad(loss, list(leaves.values()))
        opt.step(dict(zip(leaves, grads)), schedule.lr_at(step))
        if tick:
            tick(step + 1)
    S, K = len(weights), len(models)
    meta_cols = [
        torch.tensor(models, dtype=torch.float64).repeat_interleave(S),
        torch.arange(S, dtype=torch.float64).repeat(K),
        torch.tensor(schedule.snapshot_steps, dtype=torch.float64).repeat(K),
        torch.from_numpy(split[models].astype(np.float64)).repeat_interleave(S),
    ]
    meta = torch.cat([torch.stack(meta_cols, 1), chunk_tasks.repeat_interleave(S, 0),
                      rearrange(torch.stack(metrics), "s m c -> (m s) c")], dim=1)
    return {
        "weights": rearrange(torch.stack(weights), "s m p -> (m s) p").numpy(),
        "rollout_inputs": rearrange(torch.stack(roll_in), "s m ... -> (m s) ...").numpy(),
        "rollout_outputs": rearrange(torch.stack(roll_out), "s m ... -> (m s) ...").numpy(),
        "metadata": meta.numpy(),
    }


def build_zoo(config: ZooConfig, out: str | Path, resume: bool = False,
              progress: Callable[[BuildProgress], None] | None = None,
              rank: int = 0, world_size: int = 1) -> Zoo | None:
    """Build (or resume) the zoo at ``out``. With ``world_size`` > 1 this rank builds chunks
    ``chunk_id % world_size == rank`` into its shard and returns None (merge the shards after)."""
    task = task_for(config)
    arch = architecture_for(config, task)
    split, tasks = assign_tasks(task, config)
    shard = (rank, world_size) if world_size > 1 else None
    start = time.perf_counter()
    with ZooWriter.create(out, manifest_base(config, arch, task), resume=resume, shard=shard) as writer:
        pending = writer.pending_chunks()
        chunks_total = len(writer.chunk_ids())
        steps = config.schedule.steps
        total = sum(len(writer.chunk_models(c)) for c in pending) * steps
        done_before = 0
        for i, chunk in enumerate(pending):
            models = writer.chunk_models(chunk)
            chunks_done = chunks_total - len(pending) + i

            def tick(step, _done=done_before, _k=len(models), _c=chunks_done):
                if progress and (step % 10 == 0 or step == steps):
                    progress(BuildProgress(_done + step * _k, total, _c, chunks_total,
                                           time.perf_counter() - start))

            arrays = train_chunk(config, arch, task, models, split, tasks, tick)
            writer.commit_chunk(chunk, arrays)
            done_before += len(models) * steps
            if progress:
                progress(BuildProgress(done_before, total, chunks_done + 1, chunks_total,
                                       time.perf_counter() - start))
        if shard is not None:
            return None
        return writer.finalize()
