"""What a task family hands the importer when it reads a published zoo (the files of a paper's
data record): the rows in wspace's conventions, and the shape check its readers share.

A family that has published zoos names the files that mark one (``TaskFamily.published_markers``)
and reads them in ``TaskFamily.read_published(load)``; ``load(names)`` memory-maps the named
files of the folder, checked, and refuses files that are missing or disagree on the row count.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs
import numpy as np

from wspace_core.registry import WspaceError

#: ``load(names)`` -> {name: (R, ...) memory-mapped array}, every file holding the same R rows
LoadFiles = Callable[[Sequence[str]], dict[str, np.ndarray]]


@attrs.frozen(eq=False)
class PublishedZoo:
    """One published zoo, read (memory-mapped) and reshaped to wspace's conventions; R rows, one
    per snapshot, run after run in increasing step order."""

    weights: np.ndarray  # (R, P) float32
    inputs: np.ndarray  # (R, N, T) int16 tokens or (R, N, T, I) float16
    stored: np.ndarray  # (R, N, T, O) float16 outputs as published (compared with the check)
    stored_kind: str  # "log_softmax" or "logits"
    run: np.ndarray  # (R,)
    step: np.ndarray  # (R,)
    task_values: dict[str, np.ndarray]  # task column -> (R,)
    metric_values: dict[str, np.ndarray]  # metric column -> (R,)
    settings: dict[str, Any]  # family settings implied by the data
    files: tuple[str, ...]
    atol: float
    rtol: float
    #: (BOS, EOS) token ids when rollouts may carry the published EOS-over-BOS overwrite
    bos_eos: tuple[int, int] | None = None
    #: rollouts (row, rollout) whose BOS the import restores
    restored_bos: int = 0
    #: column -> (low, high): the values a task or metric column can take; a column not named
    #: may take any value, and is NaN by design where it is NaN throughout (not in the files)
    ranges: dict[str, tuple[float, float]] = attrs.field(factory=dict)


def expect_shape(array: np.ndarray, name: str, ndim: int, last: int | None = None) -> None:
    """Refuse the published file ``name`` unless it has ``ndim`` dimensions (and ``last`` in the
    last one, when given)."""
    if array.ndim != ndim or (last is not None and array.shape[-1] != last):
        want = f"{ndim} dimensions" + (f" with {last} in the last" if last is not None else "")
        raise WspaceError(f"{name} has shape {array.shape}; expected {want}")
