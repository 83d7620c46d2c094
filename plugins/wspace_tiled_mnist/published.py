"""The published tiled-MNIST zoo of the paper (Herrmann, Faccio, Schmidhuber, ICML 2024; the files
of its Zenodo record), read for ``wspace zoo import-paper``.

Layout (one row per snapshot, R = runs x snapshots; N rollouts per row):

    parameters.npy       (R, P) float32 flat weights (torch.nn.LSTM + nn.Linear)
    tasks.npy            (R, 1) rotation angle (degrees)
    sequences.npy        (R, N, T, 16) float16 network inputs (a zero BOS tile, then 49 tiles)
    logits.npy           (R, N, T, 10) float16 raw outputs (not normalised)
    num_step.npy         (R, 2) [run, step]
    accuracy_losses.npy  (R, 4) [eval accuracy, train loss, eval loss, weight decay]

The stored outputs are raw logits (the zoo stores their log-softmax, as the family's rollouts
do); gap = eval loss - train loss; weight_decay is a task column.
"""

from __future__ import annotations

import numpy as np

from wspace_core.published import LoadFiles, PublishedZoo, expect_shape
from wspace_core.registry import WspaceError

#: the files of a published tiled-MNIST zoo; the last two tell it apart
FILES = ("parameters.npy", "sequences.npy", "logits.npy", "tasks.npy", "num_step.npy", "accuracy_losses.npy")
MARKERS = ("num_step.npy", "accuracy_losses.npy")
#: the values the published columns can take (a fraction correct, losses, a weight decay)
RANGES = {"performance": (0.0, 1.0), "train_loss": (0.0, np.inf), "eval_loss": (0.0, np.inf),
          "weight_decay": (0.0, np.inf)}


def read_published(family_cls, load: LoadFiles) -> PublishedZoo:
    """The published zoo whose files ``load`` reads, for ``family_cls`` (its metric columns)."""
    a = load(FILES)
    seq, logits, tasks = a["sequences.npy"], a["logits.npy"], a["tasks.npy"]
    expect_shape(a["parameters.npy"], "parameters.npy", 2)
    expect_shape(seq, "sequences.npy", 4)
    expect_shape(logits, "logits.npy", 4)
    expect_shape(a["num_step.npy"], "num_step.npy", 2, 2)
    expect_shape(a["accuracy_losses.npy"], "accuracy_losses.npy", 2, 4)
    if tasks.ndim == 1:
        tasks = tasks[:, None]
    expect_shape(tasks, "tasks.npy", 2, 1)
    if seq.shape[:3] != logits.shape[:3]:
        raise WspaceError(f"sequences.npy {seq.shape} and logits.npy {logits.shape} disagree on "
                          f"(rows, rollouts, steps)")
    acc = np.asarray(a["accuracy_losses.npy"], dtype=np.float64)
    metrics = {"performance": acc[:, 0], "train_loss": acc[:, 1], "eval_loss": acc[:, 2],
               "gap": acc[:, 2] - acc[:, 1]}
    unknown = [c for c in family_cls.metric_columns if c not in metrics]
    if unknown:
        raise WspaceError(f"the published tiled_mnist zoo has no data for metric columns {unknown}")
    return PublishedZoo(
        weights=a["parameters.npy"], inputs=seq, stored=logits, stored_kind="logits",
        run=np.asarray(a["num_step.npy"][:, 0]), step=np.asarray(a["num_step.npy"][:, 1]),
        task_values={"angle": np.asarray(tasks[:, 0], dtype=np.float64), "weight_decay": acc[:, 3]},
        metric_values={c: metrics[c] for c in family_cls.metric_columns},
        settings={}, files=FILES, atol=5e-2, rtol=1e-2, ranges=RANGES)
