"""A batched functional LSTM whose parameter layout is exactly that of
``torch.nn.LSTM(input, hidden, layers, batch_first=True)`` followed by ``torch.nn.Linear(hidden, output)``:
names, order, shapes, gate order (i, f, g, o). A flat weight vector of such a model,
its parameters concatenated in ``model.parameters()`` order, loads directly."""

from __future__ import annotations

import math

import torch

from wspace_core.architecture import Architecture, ParameterLayout, Params
from wspace_core.symmetry import SymmetrySpec
from wspace_core.torch_rnn import stacked_layout, stacked_symmetry, uniform_init
from wspace_lstm.sequence import lstm_sequence

GATES = 4  # i, f, g, o


class LSTM(Architecture):
    """Stacked LSTM + linear read-out, any number of layers (gate order i, f, g, o)."""

    name = "lstm"

    @property
    def layout(self) -> ParameterLayout:
        return stacked_layout("lstm", GATES, self.sizes)

    @property
    def symmetry(self) -> SymmetrySpec:
        return stacked_symmetry("lstm", GATES, self.sizes)

    def init(self, num_models, generator=None, device="cpu", dtype=torch.float32) -> Params:
        """torch's defaults: LSTM U(-1/√H, 1/√H); Linear weight and bias U(-1/√H, 1/√H)."""
        return uniform_init(self.layout, 1.0 / math.sqrt(self.sizes.hidden_size), num_models, generator,
                            device, dtype)

    def initial_state(self, params: Params, batch_size: int):
        ref = params["linear.weight"]  # (M, O, H)
        M, H = ref.shape[0], self.sizes.hidden_size
        zeros = ref.new_zeros(M, batch_size, H)
        return tuple((zeros, zeros) for _ in range(self.sizes.num_layers))

    @staticmethod
    def _cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gates: (M, B, 4H) pre-activations; c: (M, B, H) -> (h, c).
        Without autograd (evaluation, rollouts) in place, with tanh(a) = 2 sigmoid(2 a) - 1:
        torch's CPU tanh costs ~3.5x its sigmoid."""
        i, f, g, o = gates.chunk(GATES, dim=-1)
        if torch.is_grad_enabled() and (gates.requires_grad or c.requires_grad):
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        i.sigmoid_()
        f.sigmoid_()
        o.sigmoid_()
        g.mul_(2).sigmoid_().mul_(2).sub_(1)  # tanh(g)
        c = torch.addcmul(f * c, i, g)
        tanh_c = torch.add(c, c).sigmoid_().mul_(2).sub_(1)
        return tanh_c.mul_(o), c

    def step(self, params: Params, x: torch.Tensor, state):
        """x: (M, B, I) -> y: (M, B, O); state: per layer (h, c), each (M, B, H)."""
        new_state = []
        inp = x
        for layer, (h, c) in enumerate(state):
            gates = torch.baddbmm(
                (params[f"lstm.bias_ih_l{layer}"] + params[f"lstm.bias_hh_l{layer}"]).unsqueeze(1),
                inp, params[f"lstm.weight_ih_l{layer}"].transpose(1, 2),
            )  # (M, B, 4H)
            gates = gates.baddbmm(h, params[f"lstm.weight_hh_l{layer}"].transpose(1, 2))
            h, c = self._cell(gates, c)
            new_state.append((h, c))
            inp = h
        y = torch.baddbmm(params["linear.bias"].unsqueeze(1), inp, params["linear.weight"].transpose(1, 2))
        return y, tuple(new_state)

    def forward(self, params: Params, xs: torch.Tensor, state=None):
        """xs: (M, B, T, I) -> ys: (M, B, T, O), the final state. The whole sequence at once
        (``wspace_lstm.sequence``): one matmul and a few elementwise ops per step and layer into
        reused time-major buffers, and, when gradients are needed, a hand-written backward."""
        if state is None:
            state = self.initial_state(params, xs.shape[1])
        return lstm_sequence(params, xs, state, self.sizes.num_layers)
