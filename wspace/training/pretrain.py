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

Under torchrun (WORLD_SIZE > 1) encoder and emulator train as one DistributedDataParallel module:
each rank draws its share of the ``batch_size`` networks from its own sampler (seeded
``distributed.rank_seed(seed, rank)``), so the effective batch stays ``batch_size``; the
evaluation is shared out over the ranks and summed, every rank takes the same early-stopping
decision (rank 0's, broadcast), and rank 0 alone writes checkpoints and calls ``log_metrics``.
In one process none of this happens and training is exactly the single-process loop.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wspace_core import plugins
from wspace.training import distributed
from wspace_core.architecture import Architecture
from wspace.config import PretrainConfig
from wspace.training.emulation import Emulator
from wspace_core.encoder import Encoder, EncoderContext, encode
from wspace_core.objective import EmulationMetric, emulation_metrics
from wspace_core.registry import WspaceError
from wspace.validation import check_finite_loss, restore_checkpoint
from wspace_core.task import TaskFamily


@attrs.frozen
class PretrainProgress:
    step: int
    total: int
    loss: float
    elapsed_s: float
    last_eval: dict | None = None


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
    objective_metric: str = ""  # the key of ``metrics`` the best state was chosen on
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
    arch, task = zoo.architecture(), zoo.task_family()
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


def evaluate_split(encoder: Encoder, emulator: Emulator, split: ZooSplit, config: PretrainConfig,
                   objectives: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Mean emulation losses over every network of the split, on its first eval_rollouts rollouts."""
    sums = _loss_sums(encoder, emulator, split, split.rows, config, objectives)
    return {name: total / len(split) for name, total in sums.items()}


def _evaluate_shared(encoder: Encoder, emulator: Emulator, split: ZooSplit, config: PretrainConfig,
                     objectives: dict[str, torch.nn.Module], ctx: distributed.DistContext) -> dict[str, float]:
    """``evaluate_split`` with the rows shared out over the ranks and the sums added up."""
    if not ctx.enabled:
        return evaluate_split(encoder, emulator, split, config, objectives)
    rows = np.array_split(split.rows, ctx.world_size)[ctx.rank]  # contiguous: sequential memmap reads
    sums = _loss_sums(encoder, emulator, split, rows, config, objectives)
    total = distributed.sum_across_ranks(torch.tensor(list(sums.values()), dtype=torch.float64), ctx)
    return {name: value / len(split) for name, value in zip(sums, total.tolist())}


def _probe_loss(encoder: Encoder, emulator: Emulator, train: ZooSplit, objective: nn.Module,
                per_net: int, seed: int, positions: str = "all") -> torch.Tensor:
    """The loss of one small training step on the first networks, from a private generator:
    what tells ``distributed.data_parallel`` which parameters a forward pass uses."""
    generator = torch.Generator().manual_seed(seed)
    params, inputs, targets, mask = train.batch(train.rows[:2], None, per_net)
    z = embed(encoder, train, params, generator, augment=True)
    return objective(emulate(emulator, z, inputs), targets, positions_mask(mask, positions)).mean()


def metric_objectives(config: PretrainConfig) -> dict[str, MetricObjective]:
    """metric name -> how it is computed: the trained objective (over ``config.loss_positions``)
    first, then every metric the objective declares (``Objective.report_metrics``)."""
    registry = plugins.objectives()
    declared = emulation_metrics(registry.get(config.objective), config.objective, config.loss_positions)
    return {m.name: MetricObjective(m, registry.get(m.objective)()) for m in declared}


def clip_groups(encoder: nn.Module, emulator: nn.Module, scope: str) -> list[list[nn.Parameter]]:
    """The parameter groups whose gradient norms are clipped each on its own: encoder and emulator
    separately ("per_module", the published code), or all of them as one ("joint")."""
    encoder_params, emulator_params = list(encoder.parameters()), list(emulator.parameters())
    if scope == "joint":
        return [encoder_params + emulator_params]
    return [group for group in (encoder_params, emulator_params) if group]


def save_checkpoint(path: Path, **payload) -> None:
    """Weights and plain data only (loadable with weights_only=True), written atomically: a write
    that fails (disk full, folder made read-only) leaves the previous checkpoint as it was."""
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as RuntimeError
        import shutil

        tmp.unlink(missing_ok=True)
        kept = f"the previous checkpoint {path} is intact" if path.exists() else "no checkpoint was kept"
        reason = err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())[:160]
        try:
            free = f"; {shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = ""
        raise WspaceError(f"cannot write the checkpoint {path} ({reason}{free}); {kept}. Free disk space or make "
                          f"the folder writable, then continue with `wspace run --resume {path.parent}`") from None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WspaceError(f"no checkpoint at {path}; start without --resume") from None
    except Exception as err:  # unpickling refused or damaged file
        raise WspaceError(
            f"checkpoint {path} cannot be loaded as plain weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); checkpoints must hold tensors and plain data only — "
            f"delete it and start the run again"
        ) from None



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


def pretrain(zoo, encoder_name: str, config: PretrainConfig, *, z_dim: int = 16, preset: str = "quick",
             encoder_options: dict | None = None, seed: int = 0, device: str = "cpu",
             checkpoint_dir: Path | None = None, resume: bool = False,
             log_metrics: Callable[[dict, int], None] | None = None,
             progress: Callable[[PretrainProgress], None] | None = None) -> PretrainResult:
    """Train encoder ``encoder_name`` by emulation on ``zoo``'s training networks. Under torchrun
    with several processes: data-parallel over the ranks (see the module docstring)."""
    ctx = distributed.setup(device)
    device_t = torch.device(ctx.device(device))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(distributed.rank_seed(seed, ctx.rank))
    local_batch = distributed.local_batch_size(config.batch_size, ctx)
    train = ZooSplit(zoo, "train", device_t)
    evals = {name: ZooSplit(zoo, name, device_t) for name in ("validation", "ood")}
    task = train.task
    context = encoder_context(zoo, z_dim, preset, encoder_options)
    encoder = build_encoder(encoder_name, context).to(device_t)
    emulator = Emulator.from_config(config, task.input_size, task.output_size, z_dim).to(device_t)
    objective = plugins.objectives().get(config.objective)()
    if getattr(objective, "output_kind", task.output_kind) != task.output_kind:
        raise WspaceError(
            f"objective {config.objective!r} is for {objective.output_kind} outputs but task "
            f"{task.name!r} has {task.output_kind} outputs; choose another --objective"
        )
    evaluated = metric_objectives(config)
    objective_metric = next(iter(evaluated))  # the best state is chosen on the trained objective
    parameters = list(encoder.parameters()) + list(emulator.parameters())
    groups = clip_groups(encoder, emulator, config.grad_clip_scope)
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)

    step, history, best = 0, [], {"loss": math.inf, "step": 0, "state": None, "metrics": {}}
    stale_evals = 0
    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / "checkpoint.pt"
    if resume:
        if ckpt_path is None:
            raise WspaceError("resuming needs a checkpoint directory")
        state = load_checkpoint(ckpt_path)
        restore_checkpoint(state, encoder, emulator, optimizer, ckpt_path)
        rng = distributed.restore_rank_rng(state, ctx) if ctx.enabled else state["rng"]
        if rng is not None:
            generator.set_state(rng["generator"]), torch.set_rng_state(rng["torch"])
        else:  # a rank of a job larger than the one that wrote the checkpoint
            generator.manual_seed(distributed.rank_seed(seed, ctx.rank) + state["step"])
        step, history, stale_evals = state["step"], list(state["history"]), state["stale_evals"]
        best = {"loss": state["best_loss"], "step": state["best_step"], "metrics": state["best_metrics"],
                "state": state.get("best_state")}

    def checkpoint(collective: bool = True):
        rng = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
        # every rank's sampler state, so that a job of the same size resumes exactly
        per_rank = distributed.all_gather_object(rng, ctx) if ctx.enabled and collective else None
        if ckpt_path is None or not ctx.is_main:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if per_rank is None else {"rng_ranks": per_rank}
        save_checkpoint(
            ckpt_path, encoder=encoder.state_dict(), emulator=emulator.state_dict(),
            optimizer=optimizer.state_dict(), rng=rng,
            step=step, history=history, stale_evals=stale_evals, best_loss=best["loss"],
            best_step=best["step"], best_metrics=best["metrics"], best_state=best["state"], **extra,
        )

    def run_eval():
        nonlocal stale_evals
        metrics = {name: _evaluate_shared(encoder, emulator, split, config, evaluated, ctx)
                   for name, split in evals.items()}
        flat = {f"{split}/{m}": v for split, ms in metrics.items() for m, v in ms.items()}
        history.append({"step": step, **flat})
        if log_metrics and ctx.is_main:
            log_metrics(flat, step)
        val = metrics["validation"][objective_metric]
        if val < best["loss"]:
            best.update(loss=val, step=step, metrics=metrics,
                        state={"encoder": copy.deepcopy(encoder.state_dict()),
                               "emulator": copy.deepcopy(emulator.state_dict())})
            stale_evals = 0
        else:
            stale_evals += 1
        stale_evals = distributed.broadcast_int(stale_evals, ctx)  # rank 0's stop decision for all
        return metrics

    start_time, stopped_early, last_eval = time.perf_counter(), False, None
    num_rollouts_stored = zoo.rollout_inputs.shape[1]
    per_net = min(config.rollouts_per_network, num_rollouts_stored)
    model = distributed.data_parallel(EmulationModel(encoder, emulator, train), ctx, device_t,
                                      lambda: _probe_loss(encoder, emulator, train, objective, per_net, seed,
                                                          config.loss_positions))
    # DDP averages the ranks' gradients; weighting each rank's mean by its share of the batch
    # makes that the gradient of the mean over all batch_size networks (1.0 for equal shares)
    share = local_batch * ctx.world_size / config.batch_size
    if step == 0:
        last_eval = run_eval()  # the untrained floor, step 0
    try:
        while step < config.steps:
            loss = training_step(model, objective, optimizer, groups, train, local_batch,
                                 per_net, config.grad_clip, generator, share, config.loss_positions)
            step += 1
            if ctx.enabled and (step % 10 == 0 or step == config.steps):
                # the loss over the whole effective batch (a collective: every rank takes part)
                total = distributed.sum_across_ranks(loss.detach().reshape(1) * local_batch, ctx)
                check_finite_loss(total.item(), step, config)  # the same value, so the same decision, on every rank
                if log_metrics and ctx.is_main:
                    log_metrics({"train/loss": total.item() / config.batch_size}, step)
            elif not ctx.enabled:
                check_finite_loss(loss.item(), step, config)
                if log_metrics and (step % 10 == 0 or step == config.steps):
                    log_metrics({"train/loss": loss.item()}, step)
            if step % config.eval_every == 0 or step == config.steps:
                last_eval = run_eval()
            if progress:
                progress(PretrainProgress(step, config.steps, loss.item(),
                                          time.perf_counter() - start_time, last_eval))
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
            if config.patience and stale_evals >= config.patience:
                stopped_early = True
                break
    except KeyboardInterrupt:
        checkpoint(collective=False)  # the other ranks may be gone: no collective now
        raise
    checkpoint()
    if best["state"] is not None:
        encoder.load_state_dict(best["state"]["encoder"])
        emulator.load_state_dict(best["state"]["emulator"])
    return PretrainResult(
        encoder=encoder, emulator=emulator, best_step=best["step"], best_validation=best["loss"],
        metrics=best["metrics"], history=history, steps_done=step, stopped_early=stopped_early,
        seconds=time.perf_counter() - start_time, objective_metric=objective_metric,
        metric_info={name: attrs.asdict(m.metric) for name, m in evaluated.items()},
    )
