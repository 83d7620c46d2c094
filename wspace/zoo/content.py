"""Checks of what a zoo's arrays hold (beyond their headers and checksums): values that would
crash or silently corrupt a later run are refused by row, with the reason.

- weights finite (a NaN weight makes every encoder's output NaN);
- rollout outputs not NaN (-inf is float16's spelling of a tiny log-probability);
- token ids within the task's vocabulary (one-hot encoding would fail on them);
- metadata rows in (model, snapshot) order at the manifest's snapshot steps, splits 0, 1 or 2.

Large arrays are scanned a block of rows at a time (memory-mapped files stay out of memory).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS

_ROWS_PER_BLOCK = 256


def rows_where(array: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Indices of the rows of ``array`` (memory-mapped or not) where ``test`` holds anywhere."""
    hits = [np.zeros(0, np.int64)]
    for start in range(0, array.shape[0], _ROWS_PER_BLOCK):
        block = np.asarray(array[start:start + _ROWS_PER_BLOCK])
        if block.size:
            hits.append(start + np.flatnonzero(test(block).reshape(len(block), -1).any(axis=1)))
    return np.concatenate(hits)


def _listing(rows: np.ndarray, name_row: Callable[[int], str]) -> str:
    shown = ", ".join(name_row(int(r)) for r in rows[:10])
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def token_vocabulary(manifest: dict) -> int | None:
    """How many token ids a zoo's integer rollout inputs may use (None: continuous inputs)."""
    task = manifest.get("task", {})
    if task.get("input_kind", "onehot") != "onehot":
        return None
    size = task.get("input_size", manifest.get("architecture", {}).get("sizes", {}).get("input_size"))
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def bad_token_rows(inputs: np.ndarray, vocabulary: int) -> np.ndarray:
    """Rows of (R, N, T) integer tokens holding an id outside 0..vocabulary-1."""
    return rows_where(inputs, lambda block: (block < 0) | (block >= vocabulary))


def check_arrays(arrays: dict[str, np.ndarray], manifest: dict, where: str, fix: str,
                 name_row: Callable[[int], str]) -> None:
    """Refuse non-finite weights, NaN outputs and out-of-vocabulary tokens (what ``zoo verify``
    and ``Zoo.open`` check, and every committed chunk). ``where`` names the files, ``fix`` says
    what to do, ``name_row(r)`` names row r."""
    bad = rows_where(arrays["weights"], lambda block: ~np.isfinite(block))
    if bad.size:
        raise WspaceError(f"{where}: weights are NaN or infinite at rows {_listing(bad, name_row)}; "
                          f"networks with such weights cannot be encoded. {fix}")
    outputs = arrays["rollout_outputs"]
    if np.issubdtype(outputs.dtype, np.floating):
        bad = rows_where(outputs, np.isnan)
        if bad.size:
            raise WspaceError(f"{where}: rollout outputs are NaN at rows {_listing(bad, name_row)}. {fix}")
    inputs = arrays["rollout_inputs"]
    vocabulary = token_vocabulary(manifest)
    if np.issubdtype(inputs.dtype, np.integer) and vocabulary is not None:
        bad = bad_token_rows(inputs, vocabulary)
        if bad.size:
            raise WspaceError(f"{where}: rollout inputs hold token ids outside 0..{vocabulary - 1} (the "
                              f"task's {vocabulary} symbols) at rows {_listing(bad, name_row)}. {fix}")
    elif np.issubdtype(inputs.dtype, np.floating):
        bad = rows_where(inputs, lambda block: ~np.isfinite(block))
        if bad.size:
            raise WspaceError(f"{where}: rollout inputs are NaN or infinite at rows {_listing(bad, name_row)}. {fix}")


def check_metadata(table: np.ndarray, manifest: dict, where: str, fix: str, first_model: int = 0) -> None:
    """The (R, C) metadata of models ``first_model``.. in (model, snapshot) order: the model,
    snapshot and step columns as the manifest says, splits 0 (train), 1 (validation) or 2 (ood)."""
    columns = manifest["metadata_columns"]
    S, steps = manifest["rows_per_model"], np.asarray(manifest["snapshot_steps"], dtype=np.float64)
    models = len(table) // S if S else 0
    col = {c: table[:, i] for i, c in enumerate(columns)}
    expected = {"model": np.repeat(np.arange(first_model, first_model + models, dtype=np.float64), S),
                "snapshot": np.tile(np.arange(S, dtype=np.float64), models),
                "step": np.tile(steps, models)}
    for name, want in expected.items():
        if len(col[name]) != len(want) or not np.array_equal(col[name], want):
            rows = np.flatnonzero(col[name] != want) if len(col[name]) == len(want) else np.arange(1)
            raise WspaceError(f"{where}: metadata column {name!r} is not what the manifest says at row "
                              f"{int(rows[0])} (rows are (model, snapshot) pairs at snapshot steps "
                              f"{manifest['snapshot_steps']}). {fix}")
    bad = np.flatnonzero(~np.isin(col["split"], np.arange(len(SPLITS))))
    if bad.size:
        raise WspaceError(f"{where}: metadata column 'split' holds {col['split'][bad[0]]!r} at row {int(bad[0])}; "
                          f"splits are 0 (train), 1 (validation) or 2 (ood). {fix}")


# ---- published zoos of the paper ------------------------------------------------------------------


def check_published(data: Any, family: Any) -> None:
    """Refuse a published zoo (``wspace_core.published.PublishedZoo``) that would crash the import
    or give a zoo of wrong values: no rows, token ids outside the family's symbols, task or metric
    values out of the ranges its reader declares (a fraction correct outside [0, 1], a negative
    loss), NaN metrics or tasks."""
    fix = "the published files are damaged or not from the paper's zoo: re-download them"
    rows = data.weights.shape[0]
    if rows == 0:
        raise WspaceError(f"the published files hold no rows (0 networks); {fix}")
    for name, values in (("run", data.run), ("step", data.step)):
        values = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if bad.size:
            raise WspaceError(f"the published {name} numbers are negative or not finite at rows "
                              f"{', '.join(map(str, bad[:10].tolist()))}; {fix}")

    def name_row(r: int) -> str:
        return f"{r} (run {int(data.run[r])} step {int(data.step[r])})"

    inputs = data.inputs
    if np.issubdtype(inputs.dtype, np.integer) and getattr(family, "input_kind", "onehot") == "onehot":
        vocabulary = family.input_size
        bad = bad_token_rows(inputs, vocabulary)
        if bad.size:
            raise WspaceError(f"sequences.npy holds token ids outside 0..{vocabulary - 1} (the "
                              f"{family.name} family's {vocabulary} symbols) at rows {_listing(bad, name_row)}; {fix}")
    ranges = data.ranges
    for kind, values_of in (("metric", data.metric_values), ("task", data.task_values)):
        for column, values in values_of.items():
            values = np.asarray(values, dtype=np.float64)
            if column not in ranges and np.isnan(values).all():
                continue  # a column the published files do not hold (e.g. performance_strict): NaN by design
            low, high = ranges.get(column, (-np.inf, np.inf))
            bad = np.flatnonzero(np.isnan(values) | (values < low) | (values > high))
            if bad.size:
                span = "" if (low, high) == (-np.inf, np.inf) else f" (it lies in [{low:g}, {high:g}])"
                raise WspaceError(f"the published {kind} {column!r} is {values[bad[0]]:g}{span} at rows "
                                  f"{_listing(bad, name_row)}; {fix}")
