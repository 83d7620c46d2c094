"""Training a group of networks as one batched computation: the loop the zoo builder runs.

Every parameter tensor has a leading model dimension; each model has its own task, its own data
stream, its own optimiser state and its own generators, so a group of K models gives exactly
what K single-model groups with the same generators give (to float rounding).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Sequence

import attrs
import numpy as np
import torch

from wspace_core.architecture import Architecture, Params
from wspace_core.registry import WspaceError
from wspace_core.task import TaskFamily, TrainingSchedule


class BatchedAdamW:
    """AdamW (decoupled weight decay) over parameters with a leading model dimension M and a
    weight decay per model (M,). Elementwise, so M models in one tensor are updated exactly as M
    separate ``torch.optim.AdamW`` optimisers would update them."""

    def __init__(self, params: Params, weight_decay: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.betas, self.eps = params, betas, eps
        decay = torch.as_tensor(weight_decay, dtype=torch.float64).reshape(-1)
        M = next(iter(params.values())).shape[0]
        if decay.shape[0] != M:
            raise WspaceError(f"weight decay must have one value per model ({M}), got shape {tuple(decay.shape)}")
        self.decay = decay
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        ref = next(iter(self.params.values()))
        keep = (1 - lr * self.decay).to(ref)  # (M,) multiplier of the decoupled decay
        for k, p in self.params.items():
            g = grads[k]
            p.mul_(keep.view(-1, *([1] * (p.ndim - 1))))
            self.m[k].lerp_(g, 1 - b1)  # m = b1 m + (1 - b1) g
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v[k].sqrt() / math.sqrt(bc2)).add_(self.eps)  # as torch.optim.AdamW
            p.addcdiv_(self.m[k], denom, value=-lr / bc1)


class BatchedTrainer:
    """The parameters and AdamW state of a group of M models; ``step`` is one full training step
    (batched forward, backward of the summed per-model mean losses, AdamW update)."""

    def __init__(self, arch: Architecture, params: Params, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 weight_decay: torch.Tensor):
        self.arch, self.params, self.loss = arch, params, loss
        self.optimizer = BatchedAdamW(params, weight_decay)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """x: (M, B, T, I) inputs, y: targets of ``loss``."""
        leaves = {k: p.detach().requires_grad_(True) for k, p in self.params.items()}
        outputs, _ = self.arch.forward(leaves, x)
        total = self.loss(outputs, y).sum()  # each model's gradient is its own training's
        grads = torch.autograd.grad(total, list(leaves.values()))
        self.optimizer.step(dict(zip(leaves, grads)), lr)


@attrs.frozen(eq=False)
class Snapshots:
    """What a group recorded at its snapshot steps (S snapshots, Kg models)."""

    weights: np.ndarray  # (S, Kg, P) float32
    metrics: np.ndarray  # (S, Kg, C) float64, columns in the family's metric_columns order
    rollout_inputs: np.ndarray  # (S, Kg, N, T) int16 tokens or (S, Kg, N, T, I) float16
    rollout_outputs: np.ndarray  # (S, Kg, N, T, O) float16


def derive_seed(*parts: Any) -> int:
    """A 63-bit generator seed from plain parts, the same on every machine (no Python hash())."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def model_generators(seed: int, kind: str, models: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per model, seeded from (zoo seed, stream kind, model index)."""
    return [torch.Generator().manual_seed(derive_seed(seed, kind, int(m))) for m in models]


@attrs.frozen(eq=False)
class GroupSpec:
    """A group of models to train as one batched computation; plain data (sent to worker
    processes). Model m's generators come from (seed, stream, m): ``init`` (initial weights),
    ``data`` (training batches) and ``eval`` (evaluation and rollouts, so evaluating never shifts
    the data a model trains on)."""

    models: tuple[int, ...] = attrs.field(converter=tuple)
    tasks: torch.Tensor  # (Kg, task columns) float64
    seed: int
    schedule: TrainingSchedule
    num_rollouts: int
    device: str = "cpu"
    data_block: int = 10


def initial_params(arch: Architecture, spec: GroupSpec) -> Params:
    """Model m's initial weights from its own generator, so a group equals single-model groups."""
    per_model = [arch.init(1, g) for g in model_generators(spec.seed, "init", spec.models)]
    return {name: torch.cat([p[name] for p in per_model]).to(spec.device) for name in arch.layout.names}


def snapshot(arch: Architecture, task: TaskFamily, params: Params, tasks: torch.Tensor,
             generators: Sequence[torch.Generator], num_rollouts: int) -> tuple[torch.Tensor, ...]:
    """(flat weights (Kg, P) float32, metrics (Kg, C) float64, rollout inputs, rollout outputs)."""
    with torch.no_grad():
        weights = arch.layout.flatten(params).float().cpu()
        metrics = task.evaluate(arch, params, tasks, generators)
        missing = [c for c in task.metric_columns if c not in metrics]
        if missing:
            raise WspaceError(f"task family {task.name!r} evaluate() did not return {', '.join(missing)} "
                              f"(its metric_columns are {', '.join(task.metric_columns)})")
        metrics = torch.stack([metrics[c].reshape(-1).double().cpu() for c in task.metric_columns], dim=1)
        x, y = task.rollouts(arch, params, tasks, num_rollouts, generators)
        x = x.cpu().to(torch.int16) if task.input_kind == "onehot" else x.cpu().half()
    return weights, metrics, x, y.cpu().half()


def train_group(arch: Architecture, task: TaskFamily, spec: GroupSpec,
                on_step: Callable[[int], None] | None = None) -> Snapshots:
    """Train the group through its schedule, snapshotting at every ``schedule.snapshot_steps``
    step (taken before that step's update; the last one after the final update).
    ``on_step(steps_done)`` is called after every update."""
    schedule, device = spec.schedule, torch.device(spec.device)
    B, block = schedule.batch_size, spec.data_block
    tasks = spec.tasks.to(torch.float64)
    params = initial_params(arch, spec)
    trainer = BatchedTrainer(arch, params, task.training_loss, task.weight_decay(tasks, schedule))
    data_gens = model_generators(spec.seed, "data", spec.models)
    eval_gens = model_generators(spec.seed, "eval", spec.models)
    snapshot_steps = set(schedule.snapshot_steps)
    records = []
    xs = ys = None
    for step in range(schedule.steps + 1):
        if step in snapshot_steps:
            records.append(snapshot(arch, task, params, tasks.to(device), eval_gens, spec.num_rollouts))
        if step == schedule.steps:
            break
        offset = step % block
        if offset == 0:  # one draw per block of steps per model, sliced per step
            xs, ys = task.training_batch(tasks, B * min(block, schedule.steps - step), data_gens, device=device)
        trainer.step(xs[:, offset * B:(offset + 1) * B], ys[:, offset * B:(offset + 1) * B], schedule.lr_at(step))
        if on_step is not None:
            on_step(step + 1)
    return Snapshots(*(np.stack([r[i].numpy() for r in records]) for i in range(4)))


def split_groups(num_models: int, groups: int) -> list[range]:
    """Contiguous, near-equal index ranges (at most ``num_models`` of them)."""
    groups = max(1, min(groups, num_models))
    bounds = [round(g * num_models / groups) for g in range(groups + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]
