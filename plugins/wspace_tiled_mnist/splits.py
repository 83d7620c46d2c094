"""The split rules over rotation angles (degrees in [0, 360)).

``published`` (default): the published code's rule over a zoo's angles (``wspace_core.splits``
with the angle itself as the criterion): the largest 15 % of the zoo's angles are OOD, a seeded
15 % of them validation, the rest train. Angles are drawn as published: a float32 uniform times
360 (``draw_published_angles``).

``wspace`` (option): OOD: angle >= 312. Below that, [0, 312) is cut into 78 bins 4° wide; every 8th bin
(bins 7, 15, …, 71, i.e. [28, 32), [60, 64), …, [284, 288): 36° in all) is validation, the
other 69 bins (276°) are train. A task (one angle) therefore belongs to exactly one split.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from wspace_core import splits as published
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS

OOD_FROM = 312.0
BIN_WIDTH = 4.0
VALIDATION_EVERY = 8  # bin b is validation when b % 8 == 7
NUM_BINS = int(OOD_FROM // BIN_WIDTH)  # 78


def _is_validation_bin(b: torch.Tensor) -> torch.Tensor:
    return b % VALIDATION_EVERY == VALIDATION_EVERY - 1


def split_of_angles(angles: torch.Tensor) -> list[str]:
    """(M,) degrees -> the split of each ("train", "validation" or "ood")."""
    angles = angles.to(torch.float64)
    if ((angles < 0) | (angles >= 360) | angles.isnan()).any():
        raise WspaceError("tiled_mnist angles must lie in [0, 360) degrees")
    bins = torch.floor(angles / BIN_WIDTH).long()
    ood = angles >= OOD_FROM
    val = ~ood & _is_validation_bin(bins)
    return ["ood" if o else "validation" if v else "train" for o, v in zip(ood.tolist(), val.tolist())]


def _bins_of(split: str) -> torch.Tensor:
    """The 4°-bin indices (over [0, 360)) that make up ``split``."""
    every = torch.arange(math.ceil(360.0 / BIN_WIDTH))
    inside = every < NUM_BINS
    if split == "ood":
        return every[~inside]
    val = inside & _is_validation_bin(every)
    return every[val] if split == "validation" else every[inside & ~val]


def sample_angles(num_models: int, generator: torch.Generator, split: str | None) -> torch.Tensor:
    """(M,) float64 angles uniform over the union of ``split``'s bins (None: over [0, 360))."""
    if split is not None and split not in SPLITS:
        raise WspaceError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or None")
    if split is None:
        return torch.rand(num_models, generator=generator, dtype=torch.float64) * 360.0
    bins = _bins_of(split)  # all bins are equally wide, so a uniform bin then a uniform offset
    which = bins[torch.randint(len(bins), (num_models,), generator=generator)].to(torch.float64)
    offset = torch.rand(num_models, generator=generator, dtype=torch.float64) * BIN_WIDTH
    low = which * BIN_WIDTH
    # rounding could land exactly on the bin's upper edge, which belongs to the next bin
    return torch.minimum(low + offset, torch.nextafter(low + BIN_WIDTH, low))


def draw_published_angles(num_models: int, generator: torch.Generator) -> torch.Tensor:
    """(M,) float64 angles as the published code draws them: ``torch.rand(1).item() * 360``, a
    float32 uniform in [0, 1) times 360 in double precision."""
    return torch.rand(num_models, generator=generator, dtype=torch.float32).double() * 360.0


def angle_criterion(keys: np.ndarray) -> np.ndarray:
    """The published default criterion: the sum of a task's entries, here its angle."""
    return keys.reshape(keys.shape[0], -1).sum(-1)


def published_splits(angles: np.ndarray, fractions) -> list[str]:
    """The published split of every network of a zoo, one angle per network."""
    return published.ranked_task_splits(np.asarray(angles, dtype=np.float64)[:, None], angle_criterion, fractions)


def published_ood_training_half(angles: np.ndarray, is_ood) -> np.ndarray:
    """(M,) bool: the OOD networks whose angle joins a downstream predictor's training data."""
    return published.ood_training_half(np.asarray(angles, dtype=np.float64)[:, None], angle_criterion, is_ood)
