"""Downstream property prediction: what a representation lets you predict about a network.

The paper's protocol: predictors train on the training networks plus a fixed, seeded half of the
OOD set, and are evaluated on the validation networks and on the *other* OOD half.
``ood_half="task"`` (default, the published code): the OOD *tasks* are halved (the task family's
``ood_training_half``: published ranking and seed, the same halves for every run seed), so no OOD
test task is seen by the predictor. ``ood_half="network"`` (wspace's earlier option): the OOD
networks are halved by model with the run seed, so a test task may also have training networks.
Either way no network (no snapshot of it) both trains and evaluates.

Two settings per encoder and property:
- ``frozen``: the pretrained encoder is fixed; an MLP head is trained on z;
- ``supervised``: the same encoder architecture, randomly initialised, trained end to end with
  the head (the baseline that pretraining must be compared with).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from wspace.config import OOD_HALVES, DownstreamConfig
from wspace_core.encoder import Encoder
from wspace_core.heads import encode_targets, head_for, headline_metrics
from wspace.training.pretrain import ZooSplit, build_encoder, embed, encoder_context
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, PropertySpec

EVAL_SPLITS = ("validation", "ood")


def ood_training_models(zoo, seed: int = 0, ood_half: str = "task") -> np.ndarray:
    """The OOD models (sorted model indices) whose rows join the predictor's training data."""
    meta = zoo.metadata
    if ood_half not in OOD_HALVES:
        raise WspaceError(f"ood_half must be one of {', '.join(OOD_HALVES)}, got {ood_half!r}")
    first = np.asarray(zoo.rows(snapshot=0))  # one row per model, in model order
    is_ood = meta["split"][first] == SPLITS.index("ood")
    ood_models = meta["model"][first][is_ood].astype(np.int64)
    if len(ood_models) < 2:
        raise WspaceError(
            f"zoo {zoo.path} has {len(ood_models)} OOD network(s); the OOD-half protocol needs at "
            f"least 2. Build a zoo with more models (--zoo-models)."
        )
    if ood_half == "network":
        shuffled = np.random.default_rng(seed).permutation(ood_models)
        return np.sort(shuffled[: len(shuffled) // 2])
    family = zoo.task_family()
    tasks = torch.from_numpy(np.stack([meta[c][first] for c in family.task_columns], axis=1))  # (M, K)
    to_training = np.asarray(family.ood_training_half(tasks, is_ood), dtype=bool)
    return meta["model"][first][to_training].astype(np.int64)


def protocol_rows(zoo, seed: int = 0, ood_half: str = "task") -> dict[str, np.ndarray]:
    """Row indices: "train" (training networks + OOD half A), "validation", "ood" (OOD half B);
    ``ood_half``: halve the OOD set by "task" (published) or by "network"."""
    meta = zoo.metadata
    ood_rows = np.asarray(zoo.rows(split="ood"))
    half_a = ood_training_models(zoo, seed, ood_half)
    in_a = np.isin(meta["model"][ood_rows].astype(np.int64), half_a)
    return {
        "train": np.concatenate([np.asarray(zoo.rows(split="train")), ood_rows[in_a]]),
        "validation": np.asarray(zoo.rows(split="validation")),
        "ood": ood_rows[~in_a],
    }


def targets_for(zoo, spec: PropertySpec, rows: np.ndarray) -> torch.Tensor:
    return encode_targets(spec, {c: zoo.metadata[c][rows] for c in spec.columns})


class _Rows(ZooSplit):
    """A ZooSplit over an explicit set of rows (the protocol mixes splits)."""

    def __init__(self, zoo, rows: np.ndarray, device: torch.device):
        self.zoo, self.split, self.device = zoo, "custom", device
        self.rows = np.asarray(rows)
        if len(self.rows) == 0:
            raise WspaceError(f"no networks to predict from in zoo {zoo.path}")
        self.arch, self.task = zoo.architecture(), zoo.task_family()


@torch.no_grad()
def frozen_embeddings(encoder: Encoder, zoo, rows: np.ndarray, device: str, batch_size: int = 64) -> torch.Tensor:
    data = _Rows(zoo, rows, torch.device(device))
    encoder.eval()
    zs = [embed(encoder, data, data.batch(data.rows[s:s + batch_size], None, 1)[0]).cpu()
          for s in range(0, len(data), batch_size)]
    encoder.train()
    return torch.cat(zs)


def _metrics(head, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    out = {"loss": float(head.loss(pred, target))}
    out.update({k: float(v) for k, v in head.metrics(pred, target).items()})
    return out


def predict_frozen(encoder: Encoder, zoo, specs: Sequence[PropertySpec], config: DownstreamConfig,
                   seed: int = 0, device: str = "cpu") -> dict[str, dict[str, dict[str, float]]]:
    """{property: {split: metrics}} of heads trained on the frozen encoder's z."""
    rows = protocol_rows(zoo, seed, config.ood_half)
    z = {name: frozen_embeddings(encoder, zoo, r, device) for name, r in rows.items()}
    results = {}
    for spec in specs:
        torch.manual_seed(seed)
        head = head_for(spec, z["train"].shape[1], config.head_hidden)
        y = {name: targets_for(zoo, spec, r) for name, r in rows.items()}
        head.calibrate(y["train"])
        opt = torch.optim.AdamW(head.parameters(), lr=config.frozen_lr, weight_decay=config.weight_decay)
        for _ in range(config.frozen_steps):
            loss = head.loss(head(z["train"]), y["train"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            results[spec.name] = {name: _metrics(head, head(z[name]), y[name])
                                  for name in ("train",) + EVAL_SPLITS}
    return results


def predict_supervised(encoder_name: str, zoo, spec: PropertySpec, config: DownstreamConfig, *,
                       z_dim: int = 16, preset: str = "quick", encoder_options: dict | None = None,
                       seed: int = 0, device: str = "cpu") -> dict[str, dict[str, float]]:
    """{split: metrics} of the same encoder architecture trained end to end with the head."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device_t = torch.device(device)
    rows = protocol_rows(zoo, seed, config.ood_half)
    data = {name: _Rows(zoo, r, device_t) for name, r in rows.items()}
    encoder = build_encoder(encoder_name, encoder_context(zoo, z_dim, preset, encoder_options)).to(device_t)
    head = head_for(spec, z_dim, config.head_hidden).to(device_t)
    y = {name: targets_for(zoo, spec, r).to(device_t) for name, r in rows.items()}
    head.calibrate(y["train"])
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.supervised_lr, weight_decay=config.weight_decay)
    train = data["train"]
    for _ in range(config.supervised_steps):
        pick = torch.randint(len(train), (config.batch_size,), generator=generator).numpy()
        weights, _, _, _ = train.batch(train.rows[pick], None, 1)
        z = embed(encoder, train, weights, generator, augment=True)
        loss = head.loss(head(z), y["train"][torch.from_numpy(pick).to(device_t)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    head.eval()
    out = {}
    with torch.no_grad():
        for name in ("train",) + EVAL_SPLITS:
            z = frozen_embeddings(encoder, zoo, rows[name], device)
            out[name] = _metrics(head, head(z.to(device_t)), y[name])
    return out


def properties_of(zoo, names: Sequence[str] | None = None) -> list[PropertySpec]:
    specs = list(zoo.task_family().properties())
    if not names:
        return specs
    known = {s.name: s for s in specs}
    missing = [n for n in names if n not in known]
    if missing:
        raise WspaceError(f"unknown property {', '.join(map(repr, missing))}; task "
                          f"{zoo.task_family().name!r} declares: {', '.join(known)}")
    return [known[n] for n in names]


def headline(metrics: dict[str, float]) -> tuple[str, float]:
    """The figure reported for a property: the headline metric its head declares
    (``Head.headline_metric``: the first of the registered heads' found in ``metrics``), else the
    head's loss."""
    for key in headline_metrics():
        if key in metrics:
            return key, metrics[key]
    return "loss", metrics["loss"]

