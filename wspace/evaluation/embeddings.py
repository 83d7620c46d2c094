"""The z of every network in a split of a zoo, and the labels its plots are coloured by."""

from __future__ import annotations

import numpy as np
import torch

from wspace.evaluation.downstream import frozen_embeddings
from wspace.training.pretrain import ZooSplit
from wspace_core.encoder import Encoder


def split_embeddings(encoder: Encoder, zoo, split: str, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows (N,), z (N, Z)) of every network in ``split``, the encoder frozen (evaluation mode)."""
    rows = ZooSplit(zoo, split, torch.device(device)).rows  # an empty split fails with what to do
    return rows, frozen_embeddings(encoder, zoo, rows, device).numpy()


def task_labels(zoo, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) an integer per distinct task of the networks at ``rows`` (plot colours)."""
    task = zoo.task_family()
    cols = np.stack([zoo.metadata[c][rows] for c in task.task_columns], axis=1)
    _, labels = np.unique(cols.round(6), axis=0, return_inverse=True)
    return labels.reshape(-1)
