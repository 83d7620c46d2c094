"""Emulation pretraining: learn E so that an emulator A(x, E(θ)) imitates f_θ on its rollouts.

One step: sample a batch of training networks (zoo rows) and a few of each one's stored
rollouts; z = normalise(E(θ)); the emulator reads the rollout inputs with teacher forcing and is
scored against the network's stored outputs by the chosen objective. Validation and OOD
emulation losses are measured at intervals; training stops early on the validation loss and the
best state is kept. Checkpoints (weights, optimiser, RNG states, step) let a run resume.
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

from wspace_core import plugins
from wspace_core.architecture import Architecture
from wspace_core.config import PretrainConfig
from wspace_core.emulation import Emulator
from wspace_core.encoder import Encoder, EncoderContext, encode
from wspace_core.registry import WspaceError
from wspace_core.task import TaskFamily

#: metrics logged whatever is optimised (categorical outputs); continuous outputs log "mse"
CATEGORICAL_METRICS = ("reverse_kl", "total_variation")


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


@torch.no_grad()
def evaluate_split(encoder: Encoder, emulator: Emulator, split: ZooSplit, config: PretrainConfig,
                   objectives: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Mean emulation losses over every network of the split, on its first eval_rollouts rollouts."""
    encoder.eval(), emulator.eval()
    sums = {name: 0.0 for name in objectives}
    for start in range(0, len(split), config.batch_size):
        rows = split.rows[start:start + config.batch_size]
        params, inputs, targets, mask = split.batch(rows, None, config.eval_rollouts)
        pred = emulate(emulator, embed(encoder, split, params), inputs)
        for name, objective in objectives.items():
            sums[name] += objective(pred, targets, mask).sum().item()
    encoder.train(), emulator.train()
    return {name: total / len(split) for name, total in sums.items()}


def _metric_objectives(config: PretrainConfig, output_kind: str) -> dict[str, torch.nn.Module]:
    names = [config.objective]
    names += [m for m in (CATEGORICAL_METRICS if output_kind == "categorical" else ("mse",)) if m not in names]
    return {name: plugins.objectives().get(name)() for name in names}


def save_checkpoint(path: Path, **payload) -> None:
    """Weights and plain data only (loadable with weights_only=True), written atomically."""
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


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


def pretrain(zoo, encoder_name: str, config: PretrainConfig, *, z_dim: int = 16, preset: str = "quick",
             encoder_options: dict | None = None, seed: int = 0, device: str = "cpu",
             checkpoint_dir: Path | None = None, resume: bool = False,
             log_metrics: Callable[[dict, int], None] | None = None,
             progress: Callable[[PretrainProgress], None] | None = None) -> PretrainResult:
    """Train encoder ``encoder_name`` by emulation on ``zoo``'s training networks."""
    device_t = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train = ZooSplit(zoo, "train", device_t)
    evals = {name: ZooSplit(zoo, name, device_t) for name in ("validation", "ood")}
    task = train.task
    context = encoder_context(zoo, z_dim, preset, encoder_options)
    encoder = build_encoder(encoder_name, context).to(device_t)
    emulator = Emulator(task.input_size, task.output_size, z_dim, config.emulator_hidden,
                        config.emulator_layers).to(device_t)
    objective = plugins.objectives().get(config.objective)()
    if getattr(objective, "output_kind", task.output_kind) != task.output_kind:
        raise WspaceError(
            f"objective {config.objective!r} is for {objective.output_kind} outputs but task "
            f"{task.name!r} has {task.output_kind} outputs; choose another --objective"
        )
    metric_objectives = _metric_objectives(config, task.output_kind)
    parameters = list(encoder.parameters()) + list(emulator.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)

    step, history, best = 0, [], {"loss": math.inf, "step": 0, "state": None, "metrics": {}}
    stale_evals = 0
    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / "checkpoint.pt"
    if resume:
        if ckpt_path is None:
            raise WspaceError("resuming needs a checkpoint directory")
        state = load_checkpoint(ckpt_path)
        encoder.load_state_dict(state["encoder"]), emulator.load_state_dict(state["emulator"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"]["generator"]), torch.set_rng_state(state["rng"]["torch"])
        step, history, stale_evals = state["step"], list(state["history"]), state["stale_evals"]
        best = {"loss": state["best_loss"], "step": state["best_step"], "metrics": state["best_metrics"],
                "state": state.get("best_state")}

    def checkpoint():
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            ckpt_path, encoder=encoder.state_dict(), emulator=emulator.state_dict(),
            optimizer=optimizer.state_dict(),
            rng={"generator": generator.get_state(), "torch": torch.get_rng_state()},
            step=step, history=history, stale_evals=stale_evals, best_loss=best["loss"],
            best_step=best["step"], best_metrics=best["metrics"], best_state=best["state"],
        )

    def run_eval():
        nonlocal stale_evals
        metrics = {name: evaluate_split(encoder, emulator, split, config, metric_objectives)
                   for name, split in evals.items()}
        flat = {f"{split}/{m}": v for split, ms in metrics.items() for m, v in ms.items()}
        history.append({"step": step, **flat})
        if log_metrics:
            log_metrics(flat, step)
        val = metrics["validation"][config.objective]
        if val < best["loss"]:
            best.update(loss=val, step=step, metrics=metrics,
                        state={"encoder": copy.deepcopy(encoder.state_dict()),
                               "emulator": copy.deepcopy(emulator.state_dict())})
            stale_evals = 0
        else:
            stale_evals += 1
        return metrics

    start_time, stopped_early, last_eval = time.perf_counter(), False, None
    num_rollouts_stored = zoo.rollout_inputs.shape[1]
    per_net = min(config.rollouts_per_network, num_rollouts_stored)
    if step == 0:
        last_eval = run_eval()  # the untrained floor, step 0
    try:
        while step < config.steps:
            pick = torch.randint(len(train), (config.batch_size,), generator=generator).numpy()
            rollouts = torch.rand(config.batch_size, num_rollouts_stored, generator=generator
                                  ).argsort(dim=1)[:, :per_net].numpy()
            params, inputs, targets, mask = train.batch(train.rows[pick], rollouts, per_net)
            z = embed(encoder, train, params, generator, augment=True)
            loss = objective(emulate(emulator, z, inputs), targets, mask).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            optimizer.step()
            step += 1
            if log_metrics and (step % 10 == 0 or step == config.steps):
                log_metrics({"train/loss": loss.item()}, step)
            if step % config.eval_every == 0 or step == config.steps:
                last_eval = run_eval()
            if progress:
                progress(PretrainProgress(step, config.steps, loss.item(),
                                          time.perf_counter() - start_time, last_eval))
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
            if stale_evals >= config.patience:
                stopped_early = True
                break
    except KeyboardInterrupt:
        checkpoint()
        raise
    checkpoint()
    if best["state"] is not None:
        encoder.load_state_dict(best["state"]["encoder"])
        emulator.load_state_dict(best["state"]["emulator"])
    return PretrainResult(
        encoder=encoder, emulator=emulator, best_step=best["step"], best_validation=best["loss"],
        metrics=best["metrics"], history=history, steps_done=step, stopped_early=stopped_early,
        seconds=time.perf_counter() - start_time,
    )
