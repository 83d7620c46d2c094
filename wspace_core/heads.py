"""From a PropertySpec to a trained-ready head: finding the registered head for its kind, asking
that head to encode its targets from zoo metadata columns, and the headline metrics the registered
heads declare. The decoding helpers (``metadata_column``, ``class_indices``, ``group_sizes``) are
for heads to build their ``encode_targets`` from."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from wspace_core import plugins
from wspace_core.objective import Head
from wspace_core.registry import WspaceError
from wspace_core.task import PropertySpec


def head_class(spec: PropertySpec) -> type[Head]:
    """The registered head for ``spec``: the one named like ``spec.kind`` if it handles that kind,
    else the first (by name) whose ``kinds`` contains it."""
    registry = plugins.heads()
    candidates = [name for name in registry.names() if spec.kind in getattr(registry.get(name), "kinds", ())]
    if not candidates:
        kinds = sorted({kind for name in registry.names() for kind in getattr(registry.get(name), "kinds", ())})
        raise WspaceError(
            f"no registered head handles property {spec.name!r} of kind {spec.kind!r}; registered "
            f"head kinds: {', '.join(kinds) or '(none)'}. Install or enable a plugin that registers "
            f"a head for {spec.kind!r} (see `wspace list heads`)."
        )
    return registry.get(spec.kind if spec.kind in candidates else candidates[0])


def head_for(spec: PropertySpec, z_dim: int, hidden: int = 128) -> Head:
    """A new head for ``spec`` (see ``head_class``) on z of size ``z_dim``."""
    return head_class(spec)(spec, z_dim, hidden)


def encode_targets(spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
    """Zoo metadata columns (each (R,) float64) -> the targets the head of ``spec`` trains on, as
    that head encodes them (``Head.encode_targets``)."""
    return head_class(spec).encode_targets(spec, columns)


def headline_metrics() -> dict[str, bool]:
    """The headline metrics the registered heads declare (``Head.headline_metric``, a loss left
    out) -> whether higher is better, in the registry's order."""
    registry = plugins.heads()
    out: dict[str, bool] = {}
    for name in registry.names():
        head = registry.get(name)
        if head.headline_metric != "loss":
            out.setdefault(head.headline_metric, head.higher_is_better)
    return out


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of the headline ``metric`` is better, as the head declaring it says
    (False, as for a loss, when no registered head declares it)."""
    return headline_metrics().get(metric, False)


def group_sizes(spec: PropertySpec) -> tuple[int, ...]:
    """Classes per one-hot group of a grouped spec (one group per column)."""
    groups = spec.groups or (len(spec.values) or spec.num_classes,) * len(spec.columns)
    if len(groups) != len(spec.columns):
        raise WspaceError(
            f"property {spec.name!r}: {len(groups)} groups but {len(spec.columns)} columns; a "
            f"grouped PropertySpec needs one group size per column."
        )
    return tuple(groups)


def metadata_column(spec: PropertySpec, columns: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Column ``name`` of ``columns`` as (R,) float64, or an error naming the columns there are."""
    if name not in columns:
        raise WspaceError(
            f"property {spec.name!r} reads metadata column {name!r}, which the zoo does not have; "
            f"its columns: {', '.join(sorted(columns))}. Rebuild the zoo with this task family "
            f"version, or fix the PropertySpec's columns."
        )
    return np.asarray(columns[name], dtype=np.float64)


def class_indices(spec: PropertySpec, name: str, values: np.ndarray, n: int) -> np.ndarray:
    """(R,) values of column ``name`` -> (R,) int64 class indices in 0..n-1: the position in
    ``spec.values`` when it lists them, else the value plus ``spec.class_offset``."""
    if spec.values:
        if len(spec.values) != n:
            raise WspaceError(
                f"property {spec.name!r} lists {len(spec.values)} values but has {n} classes; "
                f"make PropertySpec.values one value per class."
            )
        table = np.asarray(spec.values, dtype=np.float64)
        hit = np.isclose(values[:, None], table[None, :])  # (R, n)
        found = hit.any(1)
        classes = hit.argmax(1)
    else:
        shifted = values + spec.class_offset
        classes = np.rint(shifted).astype(np.int64)
        found = np.isclose(shifted, classes) & (classes >= 0) & (classes < n)
    if not found.all():
        bad = np.unique(values[~found])[:5].tolist()
        expected = list(spec.values) if spec.values else f"{-spec.class_offset}..{n - 1 - spec.class_offset}"
        raise WspaceError(
            f"property {spec.name!r}: column {name!r} holds {bad}, outside its classes {expected}; "
            f"set PropertySpec.values (or class_offset) to the values the column takes."
        )
    return classes.astype(np.int64)
