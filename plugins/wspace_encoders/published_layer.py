"""The published DWSNet layer for recurrent weights (``NPLinearLSTM`` in the published
``modules_neural_functionals.py``), stated through the symmetry spec instead of LSTM names.

The published layer's view of a weight space:

- every matrix is a grid (M, rows, cols, C) and every vector (M, rows, C); gate blocks are the
  channels (an LSTM's W_ih, W_hh, b_ih, b_hh: 4 channels); a tensor with fewer blocks is repeated
  across them (the read-out: its one block 4 times, as ``prepare_lstm_params_for_np``);
- fixed axes (the input features, the outputs) are axes too, not channels, with a learned
  embedding per position and channel added before every layer (``io_embed``) to break their
  symmetry;
- a *summary keyed by* an axis group g is an (M, n_g, C) tensor indexed by g: a matrix's column
  means (over its columns, indexed by its rows) when its rows are g, its row means when its
  columns are g, a vector whose rows are g.

Each output tensor is a sum of terms, each one channel-mixing linear map (with its own bias):

- matrix W (rows r, cols c): pointwise on W; on the global summary (the mean of every tensor);
  on the summaries of its *row term* R(W), broadcast along the columns; on those of its *column
  term* K(W), broadcast along the rows;
- vector b: on the row term of the matrix it is paired with (``structure.weight_row_sets``:
  torch's W_ih with b_ih, W_hh with b_hh, the read-out weight with its bias), and on the global
  summary.

For a feed-forward matrix (r != c: W_ih, the read-out) R(W) and K(W) are every summary keyed by
r and by c. For a recurrent matrix U (r = c = g: W_hh) the published layer takes fewer:
K(U) = U's row means and the column means and vectors of every tensor whose rows are g (not the
row means of the next layer's input matrix); R(U) = U's column means, U's own bias, U's row
means, and the row means of the other matrices reading g whose rows are hidden neurons (the next
layer's W_ih; not the read-out, which the published code leaves out for the last layer).
Initialisation as published: every term of one output U(±1/√(total fan-in of its terms)).

Hidden-neuron permutations commute with every term, so the layer is equivariant to them.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from wspace_core.registry import WspaceError
from wspace_encoders.structure import ParamStructure, weight_row_sets

Source = tuple[int, str]  # (tensor index, "colmean" | "rowmean" | "self")


def _axis_groups(structures: tuple[ParamStructure, ...]) -> list[tuple[str, ...]]:
    """The group of every axis of every tensor: a hidden group's name, or for a fixed axis a
    name of its own ("fixed rows n" shared by the tensors of one fixed row set, e.g. the read-out
    weight and bias; "<param> axis i" for a fixed column axis, e.g. the input features)."""
    out = []
    for p in structures:
        if len(p.shape) not in (1, 2):
            raise WspaceError(
                f"the published DWSNet layer takes matrices and vectors; parameter {p.name!r} has "
                f"shape {p.shape}; use the encoder option layer=full")
        groups = []
        for i, axis in enumerate(p.axes):
            if axis.group is not None:
                groups.append(axis.group)
            else:
                groups.append(f"fixed rows {axis.size}" if i == 0 else f"{p.name} axis {i}")
        out.append(tuple(groups))
    return out


class PublishedLayerPlan:
    """Which summaries feed which term of which output, derived from the structures."""

    def __init__(self, structures: tuple[ParamStructure, ...]):
        self.structures = structures
        self.groups = _axis_groups(structures)
        self.hidden = {a.group for p in structures for a in p.axes if a.group is not None}
        index = {p.name: i for i, p in enumerate(structures)}
        self.matrices = [i for i, p in enumerate(structures) if len(p.shape) == 2]
        self.vectors = [i for i, p in enumerate(structures) if len(p.shape) == 1]
        self.partner: dict[int, int | None] = {i: None for i in self.vectors}
        for row_set in weight_row_sets(structures):
            matrix, *vectors = row_set.params
            for v in vectors:
                if len(matrix.shape) == 2:
                    self.partner[index[v.name]] = index[matrix.name]
        self.row_term = {i: self._row_term(i) for i in self.matrices}
        self.col_term = {i: self._col_term(i) for i in self.matrices}
        self.vector_term = {i: (self.row_term[m] if m is not None else self.keyed(self.groups[i][0]))
                            for i, m in self.partner.items()}

    def keyed(self, group: str) -> list[Source]:
        """Every summary indexed by ``group``, in layout order."""
        out: list[Source] = []
        for i, g in enumerate(self.groups):
            if len(g) == 2:
                if g[0] == group:
                    out.append((i, "colmean"))
                if g[1] == group:
                    out.append((i, "rowmean"))
            elif g[0] == group:
                out.append((i, "self"))
        return out

    def _recurrent(self, i: int) -> bool:
        return self.groups[i][0] == self.groups[i][1]

    def _row_term(self, i: int) -> list[Source]:
        group = self.groups[i][0]
        if not self._recurrent(i):
            return self.keyed(group)
        own = [(i, "colmean")] + [(v, "self") for v, m in self.partner.items() if m == i] + [(i, "rowmean")]
        readers = [(j, "rowmean") for j in self.matrices
                   if j != i and self.groups[j][1] == group and self.groups[j][0] in self.hidden]
        return own + readers

    def _col_term(self, i: int) -> list[Source]:
        group = self.groups[i][1]
        if not self._recurrent(i):
            return self.keyed(group)
        return [(i, "rowmean")] + [s for s in self.keyed(group) if s[1] != "rowmean"]


class PublishedEquivariantLayer(nn.Module):
    """Feature tensors [(M, *axes_p, C_in)] -> [(M, *axes_p, C_out)] (module docstring)."""

    def __init__(self, plan: PublishedLayerPlan, in_channels: int, out_channels: int,
                 axis_sizes: list[tuple[int, ...]]):
        super().__init__()
        self.plan = plan
        n = len(plan.structures)
        self.pointwise = nn.ModuleDict()
        self.global_maps = nn.ModuleDict()
        self.row_maps = nn.ModuleDict()
        self.col_maps = nn.ModuleDict()
        for i in plan.matrices:
            terms = [nn.Linear(in_channels, out_channels), nn.Linear(n * in_channels, out_channels),
                     nn.Linear(len(plan.row_term[i]) * in_channels, out_channels),
                     nn.Linear(len(plan.col_term[i]) * in_channels, out_channels)]
            _init_jointly(terms)
            for table, term in zip((self.pointwise, self.global_maps, self.row_maps, self.col_maps), terms):
                table[str(i)] = term
        for i in plan.vectors:
            terms = [nn.Linear(n * in_channels, out_channels),
                     nn.Linear(len(plan.vector_term[i]) * in_channels, out_channels)]
            _init_jointly(terms)
            self.global_maps[str(i)], self.row_maps[str(i)] = terms
        # learned embeddings of the fixed axes' positions, added to the inputs (published io_embed)
        self.embeddings = nn.ParameterDict()
        for i, groups in enumerate(plan.groups):
            fixed = [g not in plan.hidden for g in groups]
            if any(fixed):
                shape = [size if f else 1 for size, f in zip(axis_sizes[i], fixed)]
                self.embeddings[str(i)] = nn.Parameter(torch.randn(*shape, in_channels))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [f + self.embeddings[str(i)] if str(i) in self.embeddings else f for i, f in enumerate(features)]
        summary: dict[Source, torch.Tensor] = {}
        for i in self.plan.matrices:  # x[i]: (M, rows, cols, C)
            summary[(i, "colmean")] = x[i].mean(dim=2)  # (M, rows, C)
            summary[(i, "rowmean")] = x[i].mean(dim=1)  # (M, cols, C)
        for i in self.plan.vectors:  # x[i]: (M, rows, C)
            summary[(i, "self")] = x[i]
        whole = torch.cat([x[i].mean(dim=(1, 2)) for i in self.plan.matrices]
                          + [x[i].mean(dim=1) for i in self.plan.vectors], dim=-1)  # (M, n * C)

        def term(table, i, sources):
            return table[str(i)](torch.cat([summary[s] for s in sources], dim=-1))  # (M, n_axis, C_out)

        out: list[torch.Tensor | None] = [None] * len(x)
        for i in self.plan.matrices:
            out[i] = (self.pointwise[str(i)](x[i])  # (M, rows, cols, C_out)
                      + rearrange(self.global_maps[str(i)](whole), "m c -> m 1 1 c")
                      + rearrange(term(self.row_maps, i, self.plan.row_term[i]), "m r c -> m r 1 c")
                      + rearrange(term(self.col_maps, i, self.plan.col_term[i]), "m k c -> m 1 k c"))
        for i in self.plan.vectors:
            out[i] = (term(self.row_maps, i, self.plan.vector_term[i])  # (M, rows, C_out)
                      + rearrange(self.global_maps[str(i)](whole), "m c -> m 1 c"))
        return out  # type: ignore[return-value]


def _init_jointly(layers: list[nn.Linear]) -> None:
    """The published ``set_init_``: weights and biases of all terms of one output U(±1/√fan-in),
    fan-in the sum of the terms' inputs."""
    bound = 1.0 / math.sqrt(sum(layer.in_features for layer in layers))
    with torch.no_grad():
        for layer in layers:
            layer.weight.uniform_(-bound, bound)
            layer.bias.uniform_(-bound, bound)


def published_features(structures: tuple[ParamStructure, ...], params: dict[str, torch.Tensor]
                       ) -> list[torch.Tensor]:
    """{name: (M, *shape)} -> [(M, *axes, C)]: blocks of each axis become channels, every axis
    (hidden or fixed) stays an axis; tensors with fewer channels than the most are repeated."""
    out = []
    for p in structures:
        x = params[p.name]
        if len(p.shape) == 2:
            r, c = p.axes
            x = rearrange(x, "m (br nr) (bc nc) -> m nr nc (br bc)", br=r.blocks, bc=c.blocks)
        else:
            x = rearrange(x, "m (b n) -> m n b", b=p.axes[0].blocks)
        out.append(x)
    channels = max(f.shape[-1] for f in out)
    for i, f in enumerate(out):
        if f.shape[-1] != channels:
            if channels % f.shape[-1]:
                raise WspaceError(
                    f"the published DWSNet layer repeats a tensor's gate blocks up to the most any "
                    f"tensor has ({channels}); {structures[i].name!r} has {f.shape[-1]}, which does "
                    f"not divide it; use the encoder option layer=full")
            out[i] = f.repeat_interleave(channels // f.shape[-1], dim=-1)
    return out


def published_channels(structures: tuple[ParamStructure, ...]) -> int:
    """Input channels of the first published layer: the most gate blocks of any tensor."""
    return max(math.prod(a.blocks for a in p.axes) for p in structures)


def axis_sizes(structures: tuple[ParamStructure, ...]) -> list[tuple[int, ...]]:
    """Positions along each axis of the published view (neurons, not gate rows)."""
    return [tuple(a.size for a in p.axes) for p in structures]
