"""Symmetry specs: frozen data saying which parameter axes move together when the hidden
neurons of a layer are permuted.

From a spec the core derives random permutations (augmentation), permutation tests, and the
equivariant weight-space layers of DWSNet, so a new architecture gets all three for free.
"""

from __future__ import annotations

from typing import Iterable

import attrs
import torch
from einops import rearrange

Params = dict[str, torch.Tensor]
Permutations = dict[str, torch.Tensor]  # group name -> (M, size) long, row i takes old neuron perm[i]


@attrs.frozen
class PermutedAxis:
    """Axis ``axis`` of parameter ``param`` (its own shape, no model dim) is ``blocks`` contiguous
    blocks of the group's size, each block permuted alike (an LSTM's 4 gate blocks: blocks=4)."""

    param: str
    axis: int
    blocks: int = 1


@attrs.frozen
class NeuronGroup:
    """A set of interchangeable hidden neurons (e.g. one recurrent layer) and every axis indexed by them."""

    name: str
    size: int
    axes: tuple[PermutedAxis, ...] = attrs.field(converter=tuple)


@attrs.frozen
class SymmetrySpec:
    groups: tuple[NeuronGroup, ...] = attrs.field(converter=tuple)

    def group(self, name: str) -> NeuronGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def axes_of(self, param: str) -> list[tuple[NeuronGroup, PermutedAxis]]:
        """Every (group, axis) that permutes ``param``."""
        return [(g, a) for g in self.groups for a in g.axes if a.param == param]

    def all_axes(self) -> list[tuple[str, PermutedAxis]]:
        """(group name, axis) for every permuted axis: the pieces an incomplete permutation may leave out."""
        return [(g.name, a) for g in self.groups for a in g.axes]

    def identity(self, num_models: int, device: torch.device | str = "cpu") -> Permutations:
        return {g.name: torch.arange(g.size, device=device).expand(num_models, g.size).clone()
                for g in self.groups}

    def random_permutations(self, num_models: int, generator: torch.Generator | None = None,
                            device: torch.device | str = "cpu") -> Permutations:
        """An independent uniformly random permutation of every group, for every model."""
        out = {}
        for g in self.groups:
            keys = torch.rand(num_models, g.size, generator=generator)  # (M, size)
            out[g.name] = keys.argsort(dim=1).to(device)
        return out

    def apply(self, params: Params, perms: Permutations,
              only: Iterable[tuple[str, PermutedAxis]] | None = None) -> Params:
        """Permute hidden neurons of every model. ``only`` restricts which (group, axis) pairs move:
        leaving any out gives an *incomplete* permutation, which in general changes the function."""
        selected = None if only is None else set(only)
        out = dict(params)
        for g in self.groups:
            perm = perms[g.name]  # (M, size)
            for a in g.axes:
                if selected is not None and (g.name, a) not in selected:
                    continue
                out[a.param] = permute_axis(out[a.param], perm, a.axis, a.blocks)
        return out


def permute_axis(tensor: torch.Tensor, perm: torch.Tensor, axis: int, blocks: int = 1) -> torch.Tensor:
    """tensor: (M, *shape); perm: (M, size). Reorders axis ``axis`` of shape (= dim axis+1),
    which holds ``blocks`` blocks of ``size``, so that new index b*size+i takes old b*size+perm[i]."""
    num_models, size = perm.shape
    offsets = torch.arange(blocks, device=perm.device) * size  # (blocks,)
    index = rearrange(offsets[None, :, None] + perm[:, None, :], "m b s -> m (b s)")  # (M, blocks*size)
    dim = axis + 1
    shape = [num_models] + [1] * (tensor.ndim - 1)
    shape[dim] = blocks * size
    return torch.take_along_dim(tensor, index.reshape(shape).to(tensor.device), dim=dim)
