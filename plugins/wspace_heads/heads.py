"""The bundled heads. Each is a 2-layer MLP (z -> hidden -> outputs) trained on the targets its
``encode_targets`` makes of zoo metadata; ``forward(z)`` gives the predictions ``loss`` and
``metrics`` take; ``headline_metric`` is the figure reports show. Shapes: B snapshots, R rows of
metadata, G groups, Z the representation size."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wspace_core.heads import class_indices, group_sizes, metadata_column
from wspace_core.objective import Head
from wspace_core.task import PropertySpec


class MLPHead(Head):
    """A 2-layer MLP predictor on z; subclasses say how many outputs and how they are scored."""

    def __init__(self, spec: PropertySpec, z_dim: int, hidden: int = 128):
        super().__init__(spec, z_dim, hidden)
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.num_outputs(spec)))

    @staticmethod
    def num_outputs(spec: PropertySpec) -> int:
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, outputs)


def real_targets(spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
    """(R,) float32: the first column's values, as they are."""
    return torch.from_numpy(metadata_column(spec, columns, spec.columns[0]).astype(np.float32))


class MultiHotHead(MLPHead):
    """Groups of one-hots (e.g. a task's three offsets), BCE; exact and per-group accuracy."""

    kinds = ("multihot",)
    headline_metric = "exact_accuracy"
    higher_is_better = True

    def __init__(self, spec: PropertySpec, z_dim: int, hidden: int = 128):
        super().__init__(spec, z_dim, hidden)
        self.groups = group_sizes(spec)
        starts = torch.tensor((0, *self.groups[:-1])).cumsum(0)
        self.register_buffer("starts", starts, persistent=False)  # (G,) first unit of each group

    @staticmethod
    def num_outputs(spec):
        return sum(group_sizes(spec))

    @classmethod
    def encode_targets(cls, spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
        """(R, G) int64: each column's class, one column per group."""
        classes = [class_indices(spec, name, metadata_column(spec, columns, name), n)
                   for name, n in zip(spec.columns, group_sizes(spec))]
        return torch.from_numpy(np.stack(classes, axis=1))  # (R, G)

    def one_hot(self, target: torch.Tensor) -> torch.Tensor:
        """(B, G) class per group -> (B, ΣC) concatenated one-hots."""
        out = torch.zeros(target.shape[0], sum(self.groups), device=target.device)
        return out.scatter_(1, target.long() + self.starts, 1.0)

    def predict(self, pred: torch.Tensor) -> torch.Tensor:
        """(B, ΣC) logits -> (B, G) argmax class of each group."""
        return torch.stack([block.argmax(-1) for block in pred.split(self.groups, dim=-1)], dim=-1)

    def loss(self, pred, target):
        return F.binary_cross_entropy_with_logits(pred, self.one_hot(target).to(pred.dtype))

    @torch.no_grad()
    def metrics(self, pred, target):
        right = self.predict(pred) == target.long()  # (B, G)
        out = {"exact_accuracy": right.all(-1).float().mean().item()}
        for column, per_group in zip(self.spec.columns, right.float().mean(0).tolist()):
            out[f"accuracy_{column}"] = per_group
        return out


class CategoricalHead(MLPHead):
    """One class out of ``num_classes`` (e.g. the training-step snapshot), cross-entropy; accuracy."""

    kinds = ("categorical",)
    headline_metric = "accuracy"
    higher_is_better = True

    @staticmethod
    def num_outputs(spec):
        return spec.num_classes

    @classmethod
    def encode_targets(cls, spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
        """(R,) int64: the first column's class."""
        name = spec.columns[0]
        return torch.from_numpy(class_indices(spec, name, metadata_column(spec, columns, name), spec.num_classes))

    def loss(self, pred, target):
        return F.cross_entropy(pred, target.long())

    @torch.no_grad()
    def metrics(self, pred, target):
        return {"accuracy": (pred.argmax(-1) == target.long()).float().mean().item()}


class ScalarHead(MLPHead):
    """A real value (e.g. accuracy, generalisation gap), mean squared error; metrics mse, mae.

    Trained on the standardised target (see ``calibrate``); predictions are in the target's units."""

    kinds = ("scalar",)
    headline_metric = "mse"

    def __init__(self, spec: PropertySpec, z_dim: int, hidden: int = 128):
        super().__init__(spec, z_dim, hidden)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))

    @staticmethod
    def num_outputs(spec):
        return 1

    @classmethod
    def encode_targets(cls, spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
        return real_targets(spec, columns)

    def calibrate(self, targets: torch.Tensor) -> None:
        """Standardise by the training targets' mean and standard deviation."""
        targets = targets.detach().double()
        self.target_mean.fill_(targets.mean().item())
        std = targets.std().item() if targets.numel() > 1 else 0.0
        self.target_scale.fill_(std if math.isfinite(std) and std > 1e-12 else 1.0)

    def forward(self, z):
        return self.target_mean + self.target_scale * self.net(z).squeeze(-1)  # (B,)

    def loss(self, pred, target):
        return F.mse_loss(pred / self.target_scale, target.to(pred.dtype) / self.target_scale)

    @torch.no_grad()
    def metrics(self, pred, target):
        err = pred.double() - target.double()
        return {"mse": err.square().mean().item(), "mae": err.abs().mean().item()}


def angle_error_degrees(pred_deg: torch.Tensor, target_deg: torch.Tensor) -> torch.Tensor:
    """|pred − target| on the circle, in [0, 180]: 359° vs 1° is 2°."""
    return torch.remainder(pred_deg - target_deg + 180.0, 360.0).sub(180.0).abs()


class AngleHead(MLPHead):
    """An angle in degrees (e.g. a rotation): MSE on (cos, sin); metric mean abs. error in degrees.

    The error is measured around the circle: 359° against 1° is 2°."""

    kinds = ("angle",)
    headline_metric = "mae_degrees"

    @staticmethod
    def num_outputs(spec):
        return 2

    @classmethod
    def encode_targets(cls, spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
        return real_targets(spec, columns)  # degrees

    @staticmethod
    def encode(target_deg: torch.Tensor) -> torch.Tensor:
        """(B,) degrees -> (B, 2) (cos, sin)."""
        rad = torch.deg2rad(target_deg.float())
        return torch.stack([rad.cos(), rad.sin()], dim=-1)

    @staticmethod
    def degrees(pred: torch.Tensor) -> torch.Tensor:
        """(B, 2) (cos, sin) -> (B,) degrees in [0, 360)."""
        return torch.remainder(torch.rad2deg(torch.atan2(pred[..., 1], pred[..., 0])), 360.0)

    def loss(self, pred, target):
        return F.mse_loss(pred, self.encode(target).to(pred.dtype))

    @torch.no_grad()
    def metrics(self, pred, target):
        err = angle_error_degrees(self.degrees(pred.double()), target.double())
        return {"mae_degrees": err.mean().item()}
