"""What the encoders know about a weight space, derived only from a ParameterLayout and a
SymmetrySpec: which axis of which parameter a hidden-neuron group permutes (and in how many
blocks), which axes are fixed, and which parameters share a row axis (a neuron's incoming
weights and biases). Nothing here knows a parameter by name."""

from __future__ import annotations

import math

import attrs
import torch
from einops import rearrange

from wspace_core.architecture import ParameterLayout, Params
from wspace_core.registry import WspaceError
from wspace_core.symmetry import SymmetrySpec


@attrs.frozen
class AxisRole:
    """One axis of one parameter: permuted by ``group`` in ``blocks`` blocks of ``size`` neurons,
    or fixed (``group`` None, ``blocks`` 1, ``size`` its length: input features, outputs)."""

    group: str | None
    blocks: int
    size: int

    @property
    def length(self) -> int:
        return self.blocks * self.size


@attrs.frozen
class ParamStructure:
    """A parameter tensor and the role of each of its axes."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    axes: tuple[AxisRole, ...] = attrs.field(converter=tuple)

    @property
    def spatial(self) -> tuple[str, ...]:
        """Groups of the permuted axes, in axis order (the axes a weight-space layer keeps)."""
        return tuple(a.group for a in self.axes if a.group is not None)

    @property
    def channels(self) -> int:
        """Blocks of the permuted axes times the lengths of the fixed axes: what folds into channels."""
        return math.prod(a.blocks if a.group is not None else a.size for a in self.axes)

    @property
    def fan_in(self) -> int:
        """Entries per row (every axis after the first); 0 for vectors and scalars."""
        return math.prod(self.shape[1:]) if len(self.shape) >= 2 else 0

    def to_features(self, tensor: torch.Tensor) -> torch.Tensor:
        """(M, *shape) -> (M, *neurons of each permuted axis, channels): blocks and fixed axes
        become channels (channel-last), each permuted axis keeps one position per neuron."""
        lhs, spatial, channel, sizes = ["m"], [], [], {}
        for i, axis in enumerate(self.axes):
            if axis.group is None:
                lhs.append(f"f{i}")
                channel.append(f"f{i}")
            else:
                lhs.append(f"(b{i} n{i})")
                spatial.append(f"n{i}")
                channel.append(f"b{i}")
                sizes[f"b{i}"] = axis.blocks
        pattern = f"{' '.join(lhs)} -> m {' '.join(spatial)} ({' '.join(channel)})"
        return rearrange(tensor, pattern, **sizes)


def param_structures(layout: ParameterLayout, symmetry: SymmetrySpec) -> tuple[ParamStructure, ...]:
    """The role of every axis of every parameter, in layout order; checks the spec fits the layout."""
    known = set(layout.names)
    roles: dict[tuple[str, int], AxisRole] = {}
    for group in symmetry.groups:
        for axis in group.axes:
            if axis.param not in known:
                raise WspaceError(
                    f"symmetry group {group.name!r} names parameter {axis.param!r}, which is not in "
                    f"the parameter layout ({', '.join(layout.names)}); fix the architecture's symmetry spec"
                )
            shape = layout[axis.param].shape
            if not 0 <= axis.axis < len(shape):
                raise WspaceError(
                    f"symmetry group {group.name!r} permutes axis {axis.axis} of {axis.param!r}, "
                    f"which has shape {shape}; fix the architecture's symmetry spec"
                )
            if axis.blocks < 1 or axis.blocks * group.size != shape[axis.axis]:
                raise WspaceError(
                    f"symmetry group {group.name!r} (size {group.size}) in {axis.blocks} block(s) does "
                    f"not fit axis {axis.axis} of {axis.param!r} (length {shape[axis.axis]})"
                )
            key = (axis.param, axis.axis)
            if key in roles:
                raise WspaceError(
                    f"axis {axis.axis} of {axis.param!r} is permuted by two groups "
                    f"({roles[key].group!r} and {group.name!r}); an axis may belong to one group only"
                )
            roles[key] = AxisRole(group.name, axis.blocks, group.size)
    return tuple(
        ParamStructure(p.name, p.shape, [roles.get((p.name, i), AxisRole(None, 1, n))
                                         for i, n in enumerate(p.shape)])
        for p in layout.params
    )


@attrs.frozen
class RowSet:
    """Parameters whose axis 0 is the same row index (torch's (out, in) convention: axis 0 indexes
    the neurons a parameter feeds): a layer's input and recurrent weights and its biases, or the
    read-out weight and bias. Row r of the set is one neuron's incoming weights plus biases.

    ``group`` is the neuron group permuting the rows (None for fixed rows, e.g. outputs).
    ``merge_blocks``: one row per neuron, its blocks (gates) side by side; otherwise one row per
    (block, neuron). Parameters with different block counts always merge."""

    group: str | None
    params: tuple[ParamStructure, ...] = attrs.field(converter=tuple)
    merge_blocks: bool = False

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(_row_axis(p).blocks for p in self.params)

    @property
    def merged(self) -> bool:
        return self.merge_blocks or len(set(self.blocks)) > 1

    @property
    def num_rows(self) -> int:
        axis = _row_axis(self.params[0])
        return axis.size if self.merged else axis.length

    @property
    def row_features(self) -> int:
        """Entries of one row: every parameter's row concatenated."""
        per_row = [math.prod(p.shape[1:]) for p in self.params]
        if self.merged:
            return sum(b * n for b, n in zip(self.blocks, per_row))
        return sum(per_row)

    def rows(self, params: Params) -> torch.Tensor:
        """{name: (M, *shape)} -> (M, num_rows, row_features)."""
        pieces = []
        for p in self.params:
            x = params[p.name]
            if x.ndim == 1:  # a scalar parameter: one row of one entry
                x = x[:, None]
            if self.merged:
                pieces.append(rearrange(x, "m (b n) ... -> m n (b ...)", b=_row_axis(p).blocks))
            else:
                pieces.append(rearrange(x, "m r ... -> m r (...)"))
        return torch.cat(pieces, dim=-1)


def _row_axis(p: ParamStructure) -> AxisRole:
    return p.axes[0] if p.axes else AxisRole(None, 1, 1)


def row_sets(structures: tuple[ParamStructure, ...], merge_blocks: bool = False) -> tuple[RowSet, ...]:
    """Parameters grouped by their row axis, in order of first appearance in the layout: rows
    permuted by the same group form one set; fixed rows of the same length form one set."""
    order: list[tuple] = []
    members: dict[tuple, list[ParamStructure]] = {}
    for p in structures:
        axis = _row_axis(p)
        key = ("group", axis.group) if axis.group is not None else ("fixed", axis.size)
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(p)
    return tuple(
        RowSet(key[1] if key[0] == "group" else None, members[key], merge_blocks) for key in order
    )


def weight_row_sets(structures: tuple[ParamStructure, ...]) -> tuple[RowSet, ...]:
    """One set per weight matrix: its rows, each with the matching entry of its bias appended
    (the published parameter transformer's tokens). Within a row set (``row_sets``) the matrices
    and the vectors are paired in layout order — the k-th matrix takes the k-th vector (torch's
    W_ih with b_ih, W_hh with b_hh, the read-out weight with its bias); vectors beyond the
    number of matrices go with the last matrix, and a row set without a matrix stays whole.
    Blocks are never merged: one row per (gate block, neuron)."""
    out: list[RowSet] = []
    for row_set in row_sets(structures):
        matrices = [p for p in row_set.params if len(p.shape) >= 2]
        vectors = [p for p in row_set.params if len(p.shape) < 2]
        if not matrices:
            out.append(row_set)
            continue
        for k, matrix in enumerate(matrices):
            paired = vectors[k:k + 1] if k < len(matrices) - 1 else vectors[k:]
            out.append(RowSet(row_set.group, (matrix, *paired), merge_blocks=False))
    return tuple(out)


def reference_fan_in(structures: tuple[ParamStructure, ...]) -> dict[str, int]:
    """name -> the fan-in its entries are scaled by (weights of typical init have std ~ 1/√fan-in):
    a matrix's own fan-in; a vector's the largest fan-in among the matrices of its row set."""
    out = {}
    for row_set in row_sets(structures):
        shared = max((p.fan_in for p in row_set.params), default=0)
        for p in row_set.params:
            out[p.name] = max(p.fan_in or shared, 1)
    return out
