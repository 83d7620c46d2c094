"""DWSNet (Navon et al. 2023) for recurrent weights (the paper's appendix C), derived entirely
from the symmetry spec. Two layers (option ``layer``):

- ``published`` (default): the published ``NPLinearLSTM`` layer (``published_layer.py``): gate
  blocks as channels, input features and outputs as axes with learned position embeddings, and
  the published selection of row, column and global terms. After the last layer every tensor
  is averaged over all its positions, as published.
- ``full`` (a wspace option, below): every summary a tensor offers reaches every output of the
  same neuron groups, including transposes and the diagonals of recurrent matrices; fixed axes
  are folded into channels, and pooling averages over the hidden-neuron axes only.

In the ``full`` layer each parameter becomes a feature tensor ``(M, *neurons, C)``: one position per neuron of every
permuted axis; gate blocks and fixed axes (input features, outputs) folded into the C channels
(an LSTM's W_hh, rows in 4 gate blocks: 4 channels on a hidden x hidden grid; its W_ih of layer 0:
4 x input channels on the hidden axis; the read-out bias: outputs channels, no axis).

An ``EquivariantLayer`` maps those tensors to new ones of the same index structure. Every input
tensor offers *summaries*: itself, its means over any subset of its permuted axes (row means,
column means, the whole mean), the transposes of these where two axes remain, and, for a tensor
whose two axes are the same neuron group (a recurrent matrix), its diagonal and the diagonal's
mean. A summary is indexed by a tuple of neuron groups (its *key*). Every output tensor receives,
for each subset of its axes, a linear map over channels of all summaries whose key equals the
groups of that subset, broadcast along the remaining axes. So each weight sees itself, its row,
column and whole means, and those of every tensor it shares a hidden-neuron group with (the
previous and next layer, the biases, the read-out). All maps commute with any permutation of
each group, so for every hidden permutation P: layer(P·θ) = P·layer(θ).

After the last layer each tensor is averaged over its permuted axes, the results concatenated,
and an MLP gives z: invariant to hidden permutations, but not to incomplete ones."""

from __future__ import annotations

import itertools
import math

import attrs
import torch
from torch import nn

from wspace_core.architecture import Params
from wspace_core.encoder import EncoderContext
from wspace_core.registry import WspaceError
from wspace_encoders.base import WeightEncoder, mlp
from wspace_encoders.config import WeightEncoderConfig, boolean, positive_int
from wspace_encoders.published_layer import (PublishedEquivariantLayer, PublishedLayerPlan, axis_sizes,
                                             published_channels, published_features)
from wspace_encoders.structure import ParamStructure

LAYERS = ("published", "full")


def _layer(value) -> str:
    if value not in LAYERS:
        raise WspaceError(f"layer must be one of {', '.join(LAYERS)}, got {value!r}")
    return value

Key = tuple[str, ...]  # the neuron groups indexing a summary's axes, in order


@attrs.frozen
class DWSNetConfig(WeightEncoderConfig):
    """``num_layers`` equivariant layers of ``channels`` channels, then an MLP with ``mlp_layers``
    hidden layers of width ``mlp_hidden``. ``layer``: ``published`` or ``full`` (module
    docstring). ``diagonal`` (``full`` only): recurrent matrices also offer their diagonal
    (self-connections) as a summary.

    The paper preset is the published ``nf`` config: 4 layers of 48 channels, MLP 128 x 1:
    1 279 736 parameters on the formal-language zoo, 1 282 400 on tiled MNIST, as the published
    ``NFLSTMParameterEncoder``."""

    channels: int = attrs.field(default=16, converter=positive_int)
    num_layers: int = attrs.field(default=2, converter=positive_int)
    mlp_hidden: int = attrs.field(default=64, converter=positive_int)
    mlp_layers: int = attrs.field(default=1, converter=positive_int)
    diagonal: bool = attrs.field(default=True, converter=boolean)
    layer: str = attrs.field(default="published", converter=_layer)

    presets = {
        "smoke": {"channels": 8, "num_layers": 2, "mlp_hidden": 32},
        "quick": {"channels": 16, "num_layers": 2, "mlp_hidden": 64},
        "paper": {"channels": 48, "num_layers": 4, "mlp_hidden": 128, "mlp_layers": 1},
    }


@attrs.frozen
class Summary:
    """Input tensor ``param``, reduced to the spatial positions ``keep`` (in that order: a
    permutation of kept positions is a transpose); ``diagonal``: of its two axes' diagonal first."""

    param: int
    keep: tuple[int, ...]
    key: Key
    diagonal: bool = False

    def __call__(self, x: torch.Tensor, means: dict[tuple[int, ...], torch.Tensor]) -> torch.Tensor:
        """x: (M, *neurons, C) -> (M, *neurons of kept axes, C). ``means``: this forward's cache
        of x's means over sets of axes (each computed from a cached mean over one axis fewer)."""
        if self.diagonal:
            x = torch.diagonal(x, dim1=1, dim2=2).movedim(-1, 1)  # (M, n, n, C) -> (M, n, C)
            return x if self.keep else x.mean(dim=1)
        dropped = tuple(i for i in range(x.ndim - 2) if i not in self.keep)
        x = _mean_over(x, dropped, means)  # (M, *kept in axis order, C)
        kept = sorted(self.keep)
        order = [kept.index(i) for i in self.keep]
        if order != sorted(order):
            x = x.permute(0, *[1 + j for j in order], x.ndim - 1)
        return x


def _mean_over(x: torch.Tensor, dropped: tuple[int, ...], means: dict) -> torch.Tensor:
    """Mean of x (M, *neurons, C) over the neuron axes ``dropped`` (increasing), memoised."""
    if not dropped:
        return x
    if dropped not in means:
        partial = _mean_over(x, dropped[:-1], means)
        means[dropped] = partial.mean(dim=1 + dropped[-1] - (len(dropped) - 1))
    return means[dropped]


def _summaries(structures: tuple[ParamStructure, ...], diagonal: bool) -> dict[Key, list[Summary]]:
    out: dict[Key, list[Summary]] = {}
    for index, p in enumerate(structures):
        k = len(p.spatial)
        for r in range(k + 1):
            for kept in itertools.combinations(range(k), r):
                for keep in itertools.permutations(kept):
                    key = tuple(p.spatial[i] for i in keep)
                    out.setdefault(key, []).append(Summary(index, keep, key))
        if diagonal and k == 2 and p.spatial[0] == p.spatial[1]:
            group = p.spatial[0]
            out.setdefault((group,), []).append(Summary(index, (0,), (group,), diagonal=True))
            out.setdefault((), []).append(Summary(index, (), (), diagonal=True))
    return out


def _targets(structures: tuple[ParamStructure, ...]) -> dict[Key, list[tuple[int, tuple[int, ...]]]]:
    """key -> every (output tensor, increasing positions of its axes) whose groups are that key."""
    out: dict[Key, list[tuple[int, tuple[int, ...]]]] = {}
    for index, q in enumerate(structures):
        k = len(q.spatial)
        for r in range(k + 1):
            for positions in itertools.combinations(range(k), r):
                out.setdefault(tuple(q.spatial[i] for i in positions), []).append((index, positions))
    return out


class EquivariantLayer(nn.Module):
    """Feature tensors [(M, *neurons_p, C_in[p])] -> [(M, *neurons_p, out_channels)], equivariant
    to permutations of every neuron group: one channel-mixing linear map per key, applied once
    to all summaries of that key, its output split among (and broadcast into) the targets."""

    def __init__(self, structures: tuple[ParamStructure, ...], in_channels: list[int],
                 out_channels: int, group_sizes: dict[str, int], diagonal: bool = True):
        super().__init__()
        self.structures, self.out_channels, self.group_sizes = structures, out_channels, group_sizes
        summaries, targets = _summaries(structures, diagonal), _targets(structures)
        self.keys = [key for key in summaries if key in targets]
        self.summaries = [summaries[key] for key in self.keys]
        self.targets = [targets[key] for key in self.keys]
        key_channels = [sum(in_channels[s.param] for s in summaries[key]) for key in self.keys]
        self.maps = nn.ModuleList(nn.Linear(c, out_channels * len(targets[key]))
                                  for key, c in zip(self.keys, key_channels))
        # every output sums several maps: scale each target's slice by the total fan-in it sees
        fan_in = [0] * len(structures)
        for c, tgts in zip(key_channels, self.targets):
            for index, _ in tgts:
                fan_in[index] += c
        with torch.no_grad():
            for linear, tgts in zip(self.maps, self.targets):
                for t, (index, _) in enumerate(tgts):
                    bound = 1.0 / math.sqrt(fan_in[index])
                    linear.weight[t * out_channels:(t + 1) * out_channels].uniform_(-bound, bound)
                linear.bias.zero_()

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        num_models = features[0].shape[0]
        out: list[torch.Tensor | None] = [None] * len(self.structures)
        means: list[dict] = [{} for _ in features]
        for summaries, targets, linear in zip(self.summaries, self.targets, self.maps):
            inputs = torch.cat([s(features[s.param], means[s.param]) for s in summaries], dim=-1)
            # inputs: (M, *key sizes, C_key)
            mixed = linear(inputs)  # (M, *key sizes, targets * C_out)
            for (index, positions), piece in zip(targets, mixed.split(self.out_channels, dim=-1)):
                q = self.structures[index]
                shape = [num_models] + [self.group_sizes[g] if i in positions else 1
                                        for i, g in enumerate(q.spatial)] + [self.out_channels]
                piece = piece.reshape(shape)  # broadcast along q's other axes
                out[index] = piece if out[index] is None else out[index] + piece
        return out  # type: ignore[return-value]


class DWSNet(WeightEncoder):
    """Equivariant weight-space layers (ReLU between), invariant mean pooling, MLP -> z."""

    name = "dwsnet"
    role = "dwsnet"  # the paper's encoder it reproduces
    config_class = DWSNetConfig

    def settings(self) -> dict:
        """The configuration, less ``diagonal`` under the published layer (which has none)."""
        settings = super().settings()
        if self.config.layer == "published":
            del settings["diagonal"]
        return settings

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        cfg = self.config
        layers: list[nn.Module] = []
        if cfg.layer == "published" and "diagonal" in context.options:
            raise WspaceError("dwsnet option diagonal applies to layer=full only (the published "
                              "layer has no diagonal terms); add layer=full or drop diagonal")
        if cfg.layer == "published":
            self.plan = PublishedLayerPlan(self.structures)
            sizes = axis_sizes(self.structures)
            channels = published_channels(self.structures)
            for _ in range(cfg.num_layers):
                layers.append(PublishedEquivariantLayer(self.plan, channels, cfg.channels, sizes))
                channels = cfg.channels
            #: the group of every axis of every feature tensor (fixed axes have names of their own)
            self.feature_groups = self.plan.groups
        else:
            group_sizes = {g.name: g.size for g in context.symmetry.groups}
            channels_per_tensor = [p.channels for p in self.structures]
            for _ in range(cfg.num_layers):
                layers.append(EquivariantLayer(self.structures, channels_per_tensor, cfg.channels,
                                               group_sizes, cfg.diagonal))
                channels_per_tensor = [cfg.channels] * len(self.structures)
            self.feature_groups = [p.spatial for p in self.structures]
        self.layers = nn.ModuleList(layers)
        self.mlp = mlp([len(self.structures) * cfg.channels] + [cfg.mlp_hidden] * cfg.mlp_layers
                       + [context.z_dim])

    def features(self, params: Params) -> list[torch.Tensor]:
        """Equivariant features after the last layer: [(M, *axes_p, channels)] in layout order,
        the axes of tensor p grouped as ``feature_groups[p]``."""
        if self.config.layer == "published":
            x = published_features(self.structures, params)
        else:
            x = [p.to_features(params[p.name]) for p in self.structures]
        for i, layer in enumerate(self.layers):
            if i:
                x = [torch.relu(f) for f in x]
            x = layer(x)
        return x

    def embed(self, params: Params) -> torch.Tensor:
        pooled = [f.mean(dim=tuple(range(1, f.ndim - 1))) if f.ndim > 2 else f
                  for f in self.features(params)]  # each (M, C): invariant
        return self.mlp(torch.cat(pooled, dim=-1))
