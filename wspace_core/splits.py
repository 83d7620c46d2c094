"""The published split protocol: splits by *task*, decided over a zoo's whole set of tasks.

What the paper's published code does (``ParametersSequencesDataset`` in its dataset_classes.py),
for any task family that supplies two things: a *key* per network (its task as the published
files store it, e.g. ``[0, mb, mc, md]`` or the rotation angle) and a *criterion* (one number per
unique task: the entropy of the relative letter counts, the angle):

1. the unique task keys of the zoo (``np.unique(keys, axis=0)``: rows in lexicographic order) are
   ranked by the criterion with numpy's default ``np.argsort`` (ties as numpy orders them);
2. with U unique tasks: ``int(U * (1 - validation - ood))`` train, ``int(U * validation)``
   validation, the rest OOD; the OOD tasks are the last ones of the ranking (highest criterion);
3. the other tasks, in rank order, are permuted by numpy's legacy generator seeded 1
   (``RandomState(1).permutation``): the first ones train, the rest validation;
4. downstream ("half of the OOD set in the predictor's training data"): the OOD tasks, in rank
   order, are permuted with seed 2; the first half (rounded down) stays OOD, the rest joins
   the predictor's training data. No OOD test task is ever seen by the predictor.

Every network follows its task. The seeds are the published ones and do not depend on any zoo or
run seed, so two zoos with the same set of tasks get the same splits.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from wspace_core.registry import WspaceError

#: numpy seed of the train / validation permutation (published: ``fix_seed(..., seed=1)``)
VALIDATION_SEED = 1
#: numpy seed of the downstream OOD halving (published: ``seed=2``)
OOD_HALF_SEED = 2

Criterion = Callable[[np.ndarray], np.ndarray]


def _ranked(keys: np.ndarray, criterion: Criterion) -> tuple[np.ndarray, np.ndarray]:
    """keys (M, K) -> (rank of each network's task (M,), number of unique tasks U)."""
    keys = np.asarray(keys)
    if keys.ndim != 2 or len(keys) == 0:
        raise WspaceError(f"task keys must be a non-empty (networks, K) array, got shape {keys.shape}")
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)  # (U, K), (M,)
    order = np.argsort(criterion(unique))  # numpy's default sort, as published
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    return rank[inverse.reshape(-1)], len(unique)


def split_counts(num_tasks: int, validation: float, ood: float) -> tuple[int, int, int]:
    """(train, validation, ood) task counts of the published rule, computed as published."""
    num_train = int(num_tasks * (1 - validation - ood))
    num_validation = int(num_tasks * validation)
    return num_train, num_validation, num_tasks - num_train - num_validation


def ranked_task_splits(keys: np.ndarray, criterion: Criterion, fractions: Sequence[float]) -> list[str]:
    """The split ("train", "validation", "ood") of every network, keys (M, K) one row per network;
    ``fractions`` = (train, validation, ood) of the unique tasks (the train share is what is left)."""
    _, validation, ood = (float(f) for f in fractions)
    rank, num_tasks = _ranked(keys, criterion)
    num_train, num_validation, num_ood = split_counts(num_tasks, validation, ood)
    names = np.empty(num_tasks, dtype=object)
    names[num_tasks - num_ood:] = "ood"  # the highest criterion (published: sorted[-num_ood:], num_ood > 0)
    permuted = np.random.RandomState(VALIDATION_SEED).permutation(num_train + num_validation)
    names[permuted[:num_train]] = "train"
    names[permuted[num_train:]] = "validation"
    return [str(names[r]) for r in rank]


def ood_training_half(keys: np.ndarray, criterion: Criterion, is_ood: Sequence[bool]) -> np.ndarray:
    """(M,) bool: the OOD networks whose *task* joins the predictor's training data (published
    downstream protocol). keys (M, K): every network of the zoo; ``is_ood`` (M,): its OOD ones."""
    is_ood = np.asarray(is_ood, dtype=bool)
    rank, _ = _ranked(keys, criterion)
    ood_ranks = np.unique(rank[is_ood])  # the OOD tasks in rank order
    if len(ood_ranks) < 2:
        raise WspaceError(f"the zoo has {len(ood_ranks)} OOD task(s); halving the OOD set by task needs at "
                          f"least 2. Build a zoo with more networks, or halve by network "
                          f"(downstream ood_half=network)")
    permuted = np.random.RandomState(OOD_HALF_SEED).permutation(len(ood_ranks))
    to_training = ood_ranks[permuted[len(ood_ranks) // 2:]]
    return is_ood & np.isin(rank, to_training)


def lexicographic(unique_keys: np.ndarray) -> np.ndarray:
    """A criterion that keeps np.unique's order (for families without a published criterion)."""
    return np.arange(len(unique_keys))
