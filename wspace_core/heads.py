"""From a PropertySpec to a trained-ready head: finding a registered head for its kind, and
encoding its targets from zoo metadata columns into what every head's ``loss`` expects."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from wspace_core import plugins
from wspace_core.objective import Head
from wspace_core.registry import WspaceError
from wspace_core.task import PropertySpec

CLASS_KINDS = ("multihot", "categorical")


def head_for(spec: PropertySpec, z_dim: int, hidden: int = 128) -> Head:
    """A head for ``spec`` from the registered heads: the one named like ``spec.kind`` if it
    handles that kind, else the first (by name) whose ``kinds`` contains it."""
    registry = plugins.heads()
    candidates = [name for name in registry.names() if spec.kind in getattr(registry.get(name), "kinds", ())]
    if not candidates:
        kinds = sorted({kind for name in registry.names() for kind in getattr(registry.get(name), "kinds", ())})
        raise WspaceError(
            f"no registered head handles property {spec.name!r} of kind {spec.kind!r}; registered "
            f"head kinds: {', '.join(kinds) or '(none)'}. Install or enable a plugin that registers "
            f"a head for {spec.kind!r} (see `wspace list heads`)."
        )
    name = spec.kind if spec.kind in candidates else candidates[0]
    return registry.get(name)(spec, z_dim, hidden)


def group_sizes(spec: PropertySpec) -> tuple[int, ...]:
    """Classes per one-hot group of a multihot spec (one group per column)."""
    groups = spec.groups or (len(spec.values) or spec.num_classes,) * len(spec.columns)
    if len(groups) != len(spec.columns):
        raise WspaceError(
            f"property {spec.name!r}: {len(groups)} groups but {len(spec.columns)} columns; a "
            f"multihot PropertySpec needs one group size per column."
        )
    return tuple(groups)


def num_classes(spec: PropertySpec) -> tuple[int, ...]:
    """Classes of each column of a class-valued spec (multihot: per group; categorical: one)."""
    return group_sizes(spec) if spec.kind == "multihot" else (spec.num_classes,)


def _column(spec: PropertySpec, columns: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in columns:
        raise WspaceError(
            f"property {spec.name!r} reads metadata column {name!r}, which the zoo does not have; "
            f"its columns: {', '.join(sorted(columns))}. Rebuild the zoo with this task family "
            f"version, or fix the PropertySpec's columns."
        )
    return np.asarray(columns[name], dtype=np.float64)


def _classes(spec: PropertySpec, name: str, values: np.ndarray, n: int) -> np.ndarray:
    """(R,) column values -> (R,) int64 class indices in 0..n-1."""
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


def encode_targets(spec: PropertySpec, columns: Mapping[str, np.ndarray]) -> torch.Tensor:
    """Zoo metadata columns (each (R,) float64) -> the targets a head of ``spec.kind`` trains on:
    multihot (R, G) long class per group; categorical (R,) long; scalar (R,) float32;
    angle (R,) float32 degrees."""
    if spec.kind in CLASS_KINDS:
        sizes = num_classes(spec)
        names = spec.columns if spec.kind == "multihot" else spec.columns[:1]
        encoded = [_classes(spec, name, _column(spec, columns, name), n) for name, n in zip(names, sizes)]
        stacked = np.stack(encoded, axis=1)  # (R, G)
        return torch.from_numpy(stacked if spec.kind == "multihot" else stacked[:, 0])
    if spec.kind in ("scalar", "angle"):
        return torch.from_numpy(_column(spec, columns, spec.columns[0]).astype(np.float32))
    raise WspaceError(
        f"property {spec.name!r} has unknown kind {spec.kind!r}; use one of "
        f"multihot, categorical, scalar, angle."
    )
