"""Emulation pretraining: learn E so that an emulator A(x, E(θ)) imitates f_θ on its rollouts.

One step: sample a batch of training networks (zoo rows) and a few of each one's stored
rollouts; z = normalise(E(θ)); the emulator reads the rollout inputs with teacher forcing and is
scored against the network's stored outputs by the chosen objective, averaged over every rollout
step (``loss_positions = "all"``, the published code) or the steps the task's rollout mask keeps
("masked"). Gradients are clipped per module (encoder, emulator) as published, or jointly.
Validation and OOD emulation losses are measured at intervals: the trained objective and every
metric the objective declares (``Objective.report_metrics``: for categorical outputs the published
code's own validation loss among them); the best validation state is kept, and training stops
early after ``patience`` evaluations without improvement (0: never, as published).
Checkpoints (weights, optimiser, RNG states, step) let a run resume.

``Pretraining`` is one run set up (splits, encoder, emulator, objective, evaluated metrics,
optimiser, clipping groups, batch sampler), built in the order the RNG is drawn in; the
benchmark times its ``train_step``. ``pretrain`` runs it through ``PretrainLoop``
(``wspace.training.loop``), which checkpoints with ``Checkpointer`` (``wspace.training.checkpoint``).

Under torchrun (WORLD_SIZE > 1) encoder and emulator train as one DistributedDataParallel module:
each rank draws its share of the ``batch_size`` networks from its own sampler (seeded
``distributed.rank_seed(seed, rank)``), so the effective batch stays ``batch_size``; the
evaluation is shared out over the ranks and summed, every rank takes the same early-stopping
decision (rank 0's, broadcast), and rank 0 alone writes checkpoints and calls ``log_metrics``.
All of it is the set-up's ``distributed.RankShare``; in one process none of it happens and
training is exactly the single-process loop.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wspace.config import TRAINED_OBJECTIVE, PretrainConfig
from wspace.training import distributed
from wspace.training.checkpoint import Checkpointer
from wspace.training.emulation import Emulator
from wspace.training.loop import PretrainLoop, PretrainProgress
from wspace_core import plugins
from wspace_core.architecture import Architecture
from wspace_core.encoder import Encoder, EncoderContext, encode
from wspace_core.objective import EmulationMetric, emulation_metrics
from wspace_core.registry import WspaceError
from wspace_core.task import TaskFamily

#: the splits every evaluation measures; the best state is chosen on the first
EVAL_SPLITS = ("validation", "ood")


@attrs.define
class PretrainResult:
    encoder: Encoder
    emulator: Emulator
    best_step: int
    best_validation: float
    metrics: dict[str, dict[str, float]]  # split -> metric -> value, at the best step
    history: list[dict]
    steps_done: int
    stopped_early: bool
    seconds: float
    objective_metric: str = ""  # the key of ``metrics`` of the trained objective
    selection_metric: str = ""  # the key of ``metrics`` the best state was chosen on
    metric_info: dict[str, dict] = attrs.field(factory=dict)  # metric -> what it computes


class ZooSplit:
    """The rows of one split of a zoo, served as batches on a device (arrays stay memory-mapped)."""

    def __init__(self, zoo, split: str, device: torch.device):
        self.zoo, self.split, self.device = zoo, split, device
        self.rows = np.asarray(zoo.rows(split=split))
        if len(self.rows) == 0:
            raise WspaceError(
                f"zoo {zoo.path} has no networks in its {split!r} split; build a zoo with more "
                f"models (--zoo-models) so every split is populated"
            )
        self.arch: Architecture = zoo.architecture()
        self.task: TaskFamily = zoo.task_family()

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, rows: np.ndarray, rollouts: np.ndarray | None, num_rollouts: int):
        """rows: zoo row indices (S,); rollouts: (S, R) rollout indices, or None for the first R.
        Returns params {name: (S, *shape)}, inputs (S, R, T, I), targets (S, R, T, O), mask (S, R, T)|None."""
        order = np.argsort(rows)  # sorted fancy indexing reads a memmap sequentially
        sorted_rows = rows[order]
        inverse = np.argsort(order)
        weights = torch.from_numpy(np.asarray(self.zoo.weights[sorted_rows], dtype=np.float32))[inverse]
        raw_in = np.asarray(self.zoo.rollout_inputs[sorted_rows])[inverse]
        raw_out = np.asarray(self.zoo.rollout_outputs[sorted_rows])[inverse]
        if rollouts is None:
            raw_in, raw_out = raw_in[:, :num_rollouts], raw_out[:, :num_rollouts]
        else:
            raw_in = _take_rollouts(raw_in, rollouts)
            raw_out = _take_rollouts(raw_out, rollouts)
        stored_inputs = torch.from_numpy(raw_in.astype(np.int64 if raw_in.dtype.kind in "iu" else np.float32))
        mask = self.task.rollout_mask(stored_inputs)
        inputs = self.task.network_inputs(stored_inputs)
        targets = torch.from_numpy(raw_out.astype(np.float32))
        params = self.arch.layout.unflatten(weights.to(self.device))
        return (params, inputs.to(self.device), targets.to(self.device),
                None if mask is None else mask.to(self.device))


def _take_rollouts(array: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """array: (S, N, ...), picks: (S, R) -> (S, R, ...)."""
    return np.take_along_axis(array, picks.reshape(picks.shape + (1,) * (array.ndim - 2)), axis=1)


def encoder_context(zoo, z_dim: int, preset: str, options: dict | None = None) -> EncoderContext:
    """The context an encoder for ``zoo``'s networks is built from."""
    return context_for(zoo.architecture(), zoo.task_family(), z_dim, preset, options)


def context_for(arch: Architecture, task: TaskFamily, z_dim: int, preset: str,
                options: dict | None = None) -> EncoderContext:
    """The context an encoder for networks of ``arch`` on ``task`` is built from (no zoo needed)."""
    return EncoderContext(
        layout=arch.layout, symmetry=arch.symmetry, sizes=arch.sizes,
        input_size=task.input_size, output_size=task.output_size,
        input_kind=task.input_kind, output_kind=task.output_kind,
        sequence_length=task.sequence_length, z_dim=z_dim, preset=preset, options=dict(options or {}),
    )


def build_encoder(name: str, context: EncoderContext) -> Encoder:
    return plugins.encoders().get(name)(context)


def embed(encoder: Encoder, split: ZooSplit, params, generator: torch.Generator | None = None,
          augment: bool = False) -> torch.Tensor:
    """z = normalise(E(θ)) for a batch; random hidden-neuron permutations when augmenting."""
    if augment and encoder.permutation_augmentation:
        symmetry = split.arch.symmetry
        num = next(iter(params.values())).shape[0]
        params = symmetry.apply(params, symmetry.random_permutations(num, generator, device=split.device))
    z = encode(encoder, split.arch, params, split.task.input_kind, split.task.output_kind)
    return F.normalize(z, dim=-1)


def emulate(emulator: Emulator, z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """z: (S, Z), inputs: (S, R, T, I) -> predictions (S, R, T, O)."""
    S, R, T, I = inputs.shape
    pred = emulator(inputs.reshape(S * R, T, I), z.repeat_interleave(R, dim=0))
    return pred.reshape(S, R, T, -1)


class EmulationModel(nn.Module):
    """Encoder and emulator as one module (what DistributedDataParallel wraps): the forward pass
    of a training step, z = normalise(E(permuted θ)) and the emulator's predictions."""

    def __init__(self, encoder: Encoder, emulator: Emulator, split: ZooSplit):
        super().__init__()
        self.encoder, self.emulator = encoder, emulator
        self.split = split  # plain attribute: the rows' architecture, task and device

    def forward(self, params, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """params {name: (S, *shape)}, inputs (S, R, T, I) -> predictions (S, R, T, O)."""
        z = embed(self.encoder, self.split, params, generator, augment=True)
        return emulate(self.emulator, z, inputs)


def positions_mask(mask: torch.Tensor | None, positions: str) -> torch.Tensor | None:
    """The mask an objective gets: none for "all" positions, the task's rollout mask for "masked"."""
    return mask if positions == "masked" else None


@attrs.frozen
class MetricObjective:
    """An evaluated metric: its declaration and the objective instance that computes it."""

    metric: EmulationMetric
    objective: nn.Module

    def __call__(self, pred, targets, mask):
        return self.objective(pred, targets, positions_mask(mask, self.metric.positions))


@torch.no_grad()
def _loss_sums(encoder: Encoder, emulator: Emulator, split: ZooSplit, rows: np.ndarray,
               config: PretrainConfig, objectives: dict[str, MetricObjective]) -> dict[str, float]:
    """Summed emulation losses over the networks ``rows`` of the split (first eval_rollouts rollouts)."""
    encoder.eval(), emulator.eval()
    sums = {name: 0.0 for name in objectives}
    for start in range(0, len(rows), config.batch_size):
        batch_rows = rows[start:start + config.batch_size]
        params, inputs, targets, mask = split.batch(batch_rows, None, config.eval_rollouts)
        pred = emulate(emulator, embed(encoder, split, params), inputs)
        for name, objective in objectives.items():
            sums[name] += objective(pred, targets, mask).sum().item()
    encoder.train(), emulator.train()
    return sums


def metric_objectives(config: PretrainConfig) -> dict[str, MetricObjective]:
    """metric name -> how it is computed: the trained objective (over ``config.loss_positions``)
    first, then every metric the objective declares (``Objective.report_metrics``)."""
    registry = plugins.objectives()
    declared = emulation_metrics(registry.get(config.objective), config.objective, config.loss_positions)
    return {m.name: MetricObjective(m, registry.get(m.objective)()) for m in declared}


def check_selection_metric(config: PretrainConfig, evaluated: dict[str, MetricObjective] | None = None) -> None:
    """``config.selection_metric`` is "objective" or a metric the objective reports (``evaluated``:
    ``metric_objectives(config)``), or the refusal names the choices."""
    evaluated = metric_objectives(config) if evaluated is None else evaluated
    if config.selection_metric not in (TRAINED_OBJECTIVE, *evaluated):
        raise WspaceError(f"selection_metric {config.selection_metric!r} is not a metric objective "
                          f"{config.objective!r} reports; choose {TRAINED_OBJECTIVE!r} (its own) or one of "
                          f"{', '.join(evaluated)}")


def clip_groups(encoder: nn.Module, emulator: nn.Module, scope: str) -> list[list[nn.Parameter]]:
    """The parameter groups whose gradient norms are clipped each on its own: encoder and emulator
    separately ("per_module", the published code), or all of them as one ("joint")."""
    encoder_params, emulator_params = list(encoder.parameters()), list(emulator.parameters())
    if scope == "joint":
        return [encoder_params + emulator_params]
    return [group for group in (encoder_params, emulator_params) if group]


def training_step(model, objective, optimizer, groups: list[list[nn.Parameter]], train: ZooSplit, batch_size: int,
                  rollouts_per_network: int, grad_clip: float, generator: torch.Generator,
                  loss_scale: float = 1.0, positions: str = "all") -> torch.Tensor:
    """One pretraining step: ``batch_size`` training networks, ``rollouts_per_network`` of each
    one's stored rollouts, emulation loss over the rollout steps ``positions``, backward,
    gradient clipping of each of ``groups`` (``clip_groups``) to norm ``grad_clip``, optimiser
    step. ``loss_scale`` weighs this process's share of the batch under DDP. Returns the mean loss."""
    num_stored = train.zoo.rollout_inputs.shape[1]
    pick = torch.randint(len(train), (batch_size,), generator=generator).numpy()
    rollouts = torch.rand(batch_size, num_stored, generator=generator
                          ).argsort(dim=1)[:, :rollouts_per_network].numpy()  # (S, R) without repeats
    params, inputs, targets, mask = train.batch(train.rows[pick], rollouts, rollouts_per_network)
    loss = objective(model(params, inputs, generator), targets, positions_mask(mask, positions)).mean()
    optimizer.zero_grad(set_to_none=True)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    for group in groups:
        torch.nn.utils.clip_grad_norm_(group, grad_clip)
    optimizer.step()
    return loss


def learning_rate(config: PretrainConfig, step: int) -> float:
    """The learning rate of training step ``step`` (from 0): a linear warm-up over
    ``warmup_steps``, then ``lr`` held ("constant") or decayed along a half cosine that reaches 0
    at ``steps`` ("cosine")."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr


def trained_objective(config: PretrainConfig, task: TaskFamily) -> nn.Module:
    """The objective ``config`` trains, refused when it is for the other kind of outputs."""
    objective = plugins.objectives().get(config.objective)()
    if getattr(objective, "output_kind", task.output_kind) != task.output_kind:
        raise WspaceError(
            f"objective {config.objective!r} is for {objective.output_kind} outputs but task "
            f"{task.name!r} has {task.output_kind} outputs; choose another --objective"
        )
    return objective


@attrs.define(eq=False)
class Pretraining:
    """One emulation pretraining, set up: what a training step and an evaluation need. Built by
    ``build``; ``pretrain`` runs it through ``PretrainLoop``, the benchmark times ``train_step``."""

    config: PretrainConfig
    seed: int
    device: torch.device
    ranks: distributed.RankShare  # this process's share of the work (all of it without torchrun)
    generator: torch.Generator  # the batch sampler (networks, rollouts, permutations)
    train: ZooSplit
    evals: dict[str, ZooSplit]  # EVAL_SPLITS
    encoder: Encoder
    emulator: Emulator
    objective: nn.Module  # the trained objective
    evaluated: dict[str, MetricObjective]  # the trained objective's metric first, then the declared ones
    groups: list[list[nn.Parameter]]  # clipped each on its own
    optimizer: torch.optim.Optimizer

    @classmethod
    def build(cls, zoo, encoder_name: str, config: PretrainConfig, *, z_dim: int = 16, preset: str = "quick",
              encoder_options: dict | None = None, seed: int = 0, device: str = "cpu") -> Pretraining:
        """Under torchrun this joins the process group. The RNG is drawn in a fixed order: the
        global seed, then the encoder's and the emulator's initial weights."""
        ctx = distributed.setup(device)
        device_t = torch.device(ctx.device(device))
        torch.manual_seed(seed)
        ranks = distributed.RankShare.of(ctx, config.batch_size)
        generator = torch.Generator().manual_seed(ranks.sampler_seed(seed))
        train = ZooSplit(zoo, "train", device_t)
        evals = {name: ZooSplit(zoo, name, device_t) for name in EVAL_SPLITS}
        encoder = build_encoder(encoder_name, encoder_context(zoo, z_dim, preset, encoder_options)).to(device_t)
        emulator = Emulator.from_config(config, train.task.input_size, train.task.output_size, z_dim).to(device_t)
        objective = trained_objective(config, train.task)
        evaluated = metric_objectives(config)
        check_selection_metric(config, evaluated)
        groups = clip_groups(encoder, emulator, config.grad_clip_scope)
        optimizer = torch.optim.AdamW(list(encoder.parameters()) + list(emulator.parameters()), lr=config.lr,
                                      weight_decay=config.weight_decay)
        return cls(config, seed, device_t, ranks, generator, train, evals, encoder, emulator, objective,
                   evaluated, groups, optimizer)

    @property
    def rollouts_per_network(self) -> int:
        """Stored rollouts of each network per step (no more than the zoo stores)."""
        return min(self.config.rollouts_per_network, self.train.zoo.rollout_inputs.shape[1])

    @property
    def objective_metric(self) -> str:
        """The trained objective's metric."""
        return next(iter(self.evaluated))

    @property
    def selection_metric(self) -> str:
        """The metric the best state is chosen on: ``config.selection_metric``, or the trained objective's."""
        chosen = self.config.selection_metric
        return self.objective_metric if chosen == TRAINED_OBJECTIVE else chosen

    def metric_info(self) -> dict[str, dict]:
        return {name: attrs.asdict(m.metric) for name, m in self.evaluated.items()}

    def model(self) -> nn.Module:
        """Encoder and emulator as the module a training step runs (DistributedDataParallel under
        torchrun, told by a probe step whether a forward pass leaves parameters unused)."""
        return self.ranks.wrap(EmulationModel(self.encoder, self.emulator, self.train), self.device, self.probe_loss)

    def probe_loss(self) -> torch.Tensor:
        """The loss of one small training step on the first networks, from a private generator."""
        generator = torch.Generator().manual_seed(self.seed)
        params, inputs, targets, mask = self.train.batch(self.train.rows[:2], None, self.rollouts_per_network)
        z = embed(self.encoder, self.train, params, generator, augment=True)
        pred = emulate(self.emulator, z, inputs)
        return self.objective(pred, targets, positions_mask(mask, self.config.loss_positions)).mean()

    def train_step(self, model: nn.Module, step: int = 0) -> torch.Tensor:
        """Training step ``step`` (counted from 0) of this rank's share of the batch through ``model``
        (``self.model()``), at the schedule's learning rate for that step."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        return training_step(model, self.objective, self.optimizer, self.groups, self.train, self.ranks.local_batch,
                             self.rollouts_per_network, config.grad_clip, self.generator, self.ranks.loss_scale,
                             config.loss_positions)

    def evaluate(self) -> dict[str, dict[str, float]]:
        """split -> metric -> mean over every network of the split (first eval_rollouts rollouts),
        the rows shared out over the ranks and the sums added up."""
        metrics = {}
        for name, split in self.evals.items():
            sums = _loss_sums(self.encoder, self.emulator, split, self.ranks.rows(split.rows), self.config,
                              self.evaluated)
            metrics[name] = self.ranks.mean(sums, len(split))
        return metrics

    def selection_loss(self, metrics: dict[str, dict[str, float]]) -> float:
        """The figure the best state is chosen on: the selection metric on the first EVAL_SPLITS."""
        return metrics[EVAL_SPLITS[0]][self.selection_metric]

    def weights(self) -> dict[str, dict]:
        """A copy of the encoder's and emulator's weights."""
        return {"encoder": copy.deepcopy(self.encoder.state_dict()),
                "emulator": copy.deepcopy(self.emulator.state_dict())}

    def load_weights(self, weights: dict[str, dict]) -> None:
        self.encoder.load_state_dict(weights["encoder"])
        self.emulator.load_state_dict(weights["emulator"])


def pretrain(zoo, encoder_name: str, config: PretrainConfig, *, z_dim: int = 16, preset: str = "quick",
             encoder_options: dict | None = None, seed: int = 0, device: str = "cpu",
             checkpoint_dir: Path | None = None, resume: bool = False,
             log_metrics: Callable[[dict, int], None] | None = None,
             progress: Callable[[PretrainProgress], None] | None = None) -> PretrainResult:
    """Train encoder ``encoder_name`` by emulation on ``zoo``'s training networks. Under torchrun
    with several processes: data-parallel over the ranks (see the module docstring)."""
    setup = Pretraining.build(zoo, encoder_name, config, z_dim=z_dim, preset=preset,
                              encoder_options=encoder_options, seed=seed, device=device)
    loop = PretrainLoop(setup, Checkpointer(checkpoint_dir, setup), log_metrics, progress)
    if resume:
        loop.resume()
    seconds = loop.run()
    best = loop.state.best
    if best.weights is not None:
        setup.load_weights(best.weights)
    return PretrainResult(
        encoder=setup.encoder, emulator=setup.emulator, best_step=best.step, best_validation=best.loss,
        metrics=best.metrics, history=loop.state.history, steps_done=loop.state.step,
        stopped_early=loop.stopped_early, seconds=seconds, objective_metric=setup.objective_metric,
        selection_metric=setup.selection_metric,
        metric_info=setup.metric_info(),
    )
