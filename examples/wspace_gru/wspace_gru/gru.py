"""A batched functional GRU whose parameter layout is exactly that of
``torch.nn.GRU(input, hidden, layers, batch_first=True)`` followed by ``torch.nn.Linear(hidden, output)``:
names, order, shapes, gate order (r, z, n). A flat weight vector of such a model, its parameters
concatenated in ``model.parameters()`` order, loads directly.

torch's equations, per layer (x the layer input, h the previous hidden state):

    r  = σ(W_ir x + b_ir + W_hr h + b_hr)
    z  = σ(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 − z) * n + z * h
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from wspace_core.architecture import Architecture, ParameterLayout, Params
from wspace_core.symmetry import SymmetrySpec
from wspace_core.torch_rnn import stacked_layout, stacked_symmetry, uniform_init

GATES = 3  # r, z, n

#: about this many projected gate values per time chunk of ``GRU.forward`` (2 MiB in float32)
CHUNK_ELEMENTS = 1 << 19


def _cell(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """gx = W_ih x + b_ih, gh = W_hh h + b_hh: (M, B, 3H); h: (M, B, H) -> next h (M, B, H)."""
    H = h.shape[-1]
    rz = torch.sigmoid(gx[..., : 2 * H] + gh[..., : 2 * H])  # (M, B, 2H): r and z in one op
    r, z = rz[..., :H], rz[..., H:]
    n = torch.tanh(torch.addcmul(gx[..., 2 * H:], r, gh[..., 2 * H:]))  # (M, B, H)
    return torch.addcmul(n, z, h - n)  # (1 − z) n + z h


class GRU(Architecture):
    """Stacked GRU + linear read-out, any number of layers (torch.nn.GRU's gate order r, z, n)."""

    name = "gru"

    @property
    def layout(self) -> ParameterLayout:
        return stacked_layout("gru", GATES, self.sizes)

    @property
    def symmetry(self) -> SymmetrySpec:
        """Per layer: the rows of each of the 3 gate blocks of W_ih, W_hh and both biases, the
        columns of W_hh, and the columns of whatever reads the layer (next W_ih or the read-out)."""
        return stacked_symmetry("gru", GATES, self.sizes)

    def init(self, num_models, generator=None, device="cpu", dtype=torch.float32) -> Params:
        """torch's defaults: GRU U(-1/√H, 1/√H); Linear(H, O) weight and bias U(-1/√H, 1/√H)."""
        return uniform_init(self.layout, 1.0 / math.sqrt(self.sizes.hidden_size), num_models, generator,
                            device, dtype)

    def initial_state(self, params: Params, batch_size: int):
        """Per layer one h of zeros, (M, B, H)."""
        ref = params["linear.weight"]  # (M, O, H)
        zeros = ref.new_zeros(ref.shape[0], batch_size, self.sizes.hidden_size)
        return tuple(zeros for _ in range(self.sizes.num_layers))

    def _readout(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        """h: (M, N, H) -> (M, N, O)."""
        return torch.baddbmm(params["linear.bias"].unsqueeze(1), h, params["linear.weight"].transpose(1, 2))

    def step(self, params: Params, x: torch.Tensor, state):
        """x: (M, B, I) -> y: (M, B, O); state: per layer h, each (M, B, H)."""
        new_state = []
        inp = x
        for layer, h in enumerate(state):
            gx = torch.baddbmm(params[f"gru.bias_ih_l{layer}"].unsqueeze(1), inp,
                               params[f"gru.weight_ih_l{layer}"].transpose(1, 2))  # (M, B, 3H)
            gh = torch.baddbmm(params[f"gru.bias_hh_l{layer}"].unsqueeze(1), h,
                               params[f"gru.weight_hh_l{layer}"].transpose(1, 2))  # (M, B, 3H)
            h = _cell(gx, gh, h)
            new_state.append(h)
            inp = h
        return self._readout(params, inp), tuple(new_state)

    def forward(self, params: Params, xs: torch.Tensor, state=None):
        """xs: (M, B, T, I) -> ys: (M, B, T, O), final state.

        Time is cut into chunks of a few steps (about ``CHUNK_ELEMENTS`` projected gate values
        each); per chunk and layer the input projection of all its steps is one batched matmul
        and only the recurrent matmul stays in the step loop. Whole-sequence projections would
        write and re-read (M, B, T, 3H) through main memory; chunks stay in cache."""
        M, B, T, _ = xs.shape
        H = self.sizes.hidden_size
        hidden = list(self.initial_state(params, B) if state is None else state)
        weights = [
            (params[f"gru.bias_ih_l{k}"].unsqueeze(1),  # (M, 1, 3H)
             params[f"gru.weight_ih_l{k}"].transpose(1, 2),  # (M, in, 3H)
             params[f"gru.bias_hh_l{k}"].unsqueeze(1),  # (M, 1, 3H)
             params[f"gru.weight_hh_l{k}"].transpose(1, 2).contiguous())  # (M, H, 3H): once, not per step
            for k in range(self.sizes.num_layers)
        ]
        chunk = max(1, min(T, CHUNK_ELEMENTS // (M * B * GATES * H)))
        ys = []
        for xc in xs.split(chunk, dim=2):  # (M, B, t, I)
            t = xc.shape[2]
            inp = rearrange(xc, "m b t i -> m (t b) i")  # time-major: each step's rows contiguous
            for layer, (b_ih, w_ih_t, b_hh, w_hh_t) in enumerate(weights):
                proj = rearrange(torch.baddbmm(b_ih, inp, w_ih_t), "m (t b) g -> m t b g", t=t)
                h, hs = hidden[layer], []
                for gx in proj.unbind(dim=1):  # (M, B, 3H) per step; unbind keeps the backward O(T)
                    h = _cell(gx, torch.baddbmm(b_hh, h, w_hh_t), h)
                    hs.append(h)
                hidden[layer] = h
                inp = rearrange(torch.stack(hs, dim=1), "m t b h -> m (t b) h")  # (M, t*B, H)
            ys.append(rearrange(self._readout(params, inp), "m (t b) o -> m b t o", t=t))
        return torch.cat(ys, dim=2), tuple(hidden)
