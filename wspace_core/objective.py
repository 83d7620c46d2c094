"""Contracts for emulation objectives and property-prediction heads."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from wspace_core.task import PropertySpec


class Objective(nn.Module):
    """Emulation loss. Registered as a factory ``cls()``.

    forward(pred, target, mask) -> (M,) loss per network, where
    pred: (M, N, T, O) raw emulator outputs (logits for categorical outputs),
    target: (M, N, T, O) the network's stored outputs (log-probabilities for categorical),
    mask: (M, N, T) bool, steps that count (None: all).
    """

    output_kind: ClassVar[Literal["categorical", "continuous"]] = "categorical"

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """values: (M, N, T) -> (M,) mean over the steps that count."""
    if mask is None:
        return values.flatten(1).mean(1)
    mask = mask.to(values.dtype)
    return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


class Head(nn.Module):
    """Predicts one property from z. Registered as a factory ``cls(spec, z_dim, hidden)``;
    ``kinds`` lists the PropertySpec kinds it handles."""

    kinds: ClassVar[tuple[str, ...]] = ()

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
