"""Contracts for emulation objectives and property-prediction heads."""

from __future__ import annotations

from typing import ClassVar, Literal, Mapping, Sequence

import attrs
import numpy as np
import torch
from torch import nn

from wspace_core.task import PropertySpec
from wspace_core.validators import one_of

#: which rollout steps an emulation loss averages over: "all" of them (the published code: every
#: one of the T positions, nothing masked after EOS), or "masked", the steps the task family's
#: ``rollout_mask`` keeps (formal languages: up to the first EOS)
POSITIONS = ("all", "masked")


_check_positions = one_of(*POSITIONS)


@attrs.frozen
class EmulationMetric:
    """A figure pretraining reports on the validation and OOD networks whatever it optimises:
    the registered objective ``objective``, averaged over the rollout steps ``positions``, then
    over rollouts and networks. ``published``: computed exactly as the paper's published code
    computes its validation loss (same per-step loss, same reduction, same positions)."""

    name: str
    objective: str
    positions: str = attrs.field(validator=_check_positions)
    published: bool = False
    description: str = ""


class Objective(nn.Module):
    """Emulation loss. Registered as a factory ``cls()``.

    forward(pred, target, mask) -> (M,) loss per network, where
    pred: (M, N, T, O) raw emulator outputs (logits for categorical outputs),
    target: (M, N, T, O) the network's stored outputs (log-probabilities for categorical),
    mask: (M, N, T) bool, steps that count (None: all).

    ``report_metrics`` declares the figures pretraining reports next to the trained objective
    when this objective is trained (names are keys of results.json and MLflow metrics).
    """

    output_kind: ClassVar[Literal["categorical", "continuous"]] = "categorical"
    report_metrics: ClassVar[tuple[EmulationMetric, ...]] = ()

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def objective_metric_name(objective: str, positions: str, declared: Sequence[EmulationMetric] = ()) -> str:
    """The metric key under which the trained objective is reported: a declared metric's name
    when one computes the same thing, else the objective's name ("masked" positions) or
    ``<objective>_all_steps``."""
    for metric in declared:
        if metric.objective == objective and metric.positions == positions:
            return metric.name
    return objective if positions == "masked" else f"{objective}_all_steps"


def emulation_metrics(objective_cls: type[Objective], objective: str, positions: str) -> tuple[EmulationMetric, ...]:
    """What pretraining evaluates: the trained objective first (the checkpoint is chosen on it),
    then every other metric ``objective_cls`` declares."""
    declared = tuple(objective_cls.report_metrics)
    name = objective_metric_name(objective, positions, declared)
    trained = next((m for m in declared if m.name == name),
                   EmulationMetric(name, objective, positions, description="the trained objective"))
    return (trained,) + tuple(m for m in declared if m.name != name)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """values: (M, N, T) -> (M,) mean over the steps that count."""
    if mask is None:
        return values.flatten(1).mean(1)
    mask = mask.to(values.dtype)
    return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


class Head(nn.Module):
    """Predicts one property from z. Registered as a factory ``cls(spec, z_dim, hidden)``;
    ``kinds`` lists the PropertySpec kinds it handles, ``encode_targets`` turns zoo metadata into
    what ``loss`` and ``metrics`` take, ``headline_metric`` names the one figure of ``metrics`` a
    report shows for the property."""

    kinds: ClassVar[tuple[str, ...]] = ()
    #: the key of ``metrics`` reported for the property (default: the head's loss)
    headline_metric: ClassVar[str] = "loss"
    #: whether a larger ``headline_metric`` is better (an accuracy) or worse (an error)
    higher_is_better: ClassVar[bool] = False

    @classmethod
    def encode_targets(cls, spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
        """Zoo metadata columns named by ``spec.columns`` (each (R,) float64) -> the targets of R
        snapshots, as ``loss`` and ``metrics`` take them (``wspace_core.heads`` has helpers)."""
        raise NotImplementedError

    def __init__(self, spec: PropertySpec, z_dim: int, hidden: int = 128):
        super().__init__()
        self.spec = spec

    def calibrate(self, targets: torch.Tensor) -> None:
        """Called once with the training targets before training, so a head can adapt to their
        scale (a scalar head standardises its regression target). Default: nothing."""

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss."""
        raise NotImplementedError

    def metrics(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Reported figures (e.g. accuracy, mean absolute error)."""
        raise NotImplementedError
