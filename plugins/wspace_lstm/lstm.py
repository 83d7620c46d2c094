"""A batched functional LSTM whose parameter layout is exactly that of
``torch.nn.LSTM(input, hidden, layers, batch_first=True)`` followed by ``torch.nn.Linear(hidden, output)``:
names, order, shapes, gate order (i, f, g, o). A flat weight vector of such a model,
its parameters concatenated in ``model.parameters()`` order, loads directly."""

from __future__ import annotations

import math

import torch
from einops import rearrange

from wspace_core.architecture import Architecture, ParameterLayout, Params, ParamSpec
from wspace_core.symmetry import NeuronGroup, PermutedAxis, SymmetrySpec
from wspace_lstm.sequence import lstm_sequence

GATES = 4  # i, f, g, o


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh via sigmoid (identical up to float rounding). Kept for callers; the cell uses
    torch.tanh, which current torch builds vectorise (7-10x faster than this on CPU, torch 2.14)."""
    return torch.sigmoid(2 * x) * 2 - 1


def _needs_grad(params: Params, xs: torch.Tensor, state) -> bool:
    if not torch.is_grad_enabled():
        return False
    tensors = [*params.values(), xs, *(s for pair in (state or ()) for s in pair)]
    return any(t.requires_grad for t in tensors)


class LSTM(Architecture):
    """Stacked LSTM + linear read-out, any number of layers (gate order i, f, g, o)."""

    name = "lstm"

    @property
    def layout(self) -> ParameterLayout:
        s = self.sizes
        H = s.hidden_size
        specs = []
        for layer in range(s.num_layers):
            in_size = s.input_size if layer == 0 else H
            specs += [
                ParamSpec(f"lstm.weight_ih_l{layer}", (GATES * H, in_size)),
                ParamSpec(f"lstm.weight_hh_l{layer}", (GATES * H, H)),
                ParamSpec(f"lstm.bias_ih_l{layer}", (GATES * H,)),
                ParamSpec(f"lstm.bias_hh_l{layer}", (GATES * H,)),
            ]
        specs += [ParamSpec("linear.weight", (s.output_size, H)), ParamSpec("linear.bias", (s.output_size,))]
        return ParameterLayout(specs)

    @property
    def symmetry(self) -> SymmetrySpec:
        s = self.sizes
        groups = []
        for layer in range(s.num_layers):
            axes = [
                PermutedAxis(f"lstm.weight_ih_l{layer}", 0, GATES),
                PermutedAxis(f"lstm.weight_hh_l{layer}", 0, GATES),
                PermutedAxis(f"lstm.bias_ih_l{layer}", 0, GATES),
                PermutedAxis(f"lstm.bias_hh_l{layer}", 0, GATES),
                PermutedAxis(f"lstm.weight_hh_l{layer}", 1, 1),
            ]
            nxt = f"lstm.weight_ih_l{layer + 1}" if layer + 1 < s.num_layers else "linear.weight"
            axes.append(PermutedAxis(nxt, 1, 1))
            groups.append(NeuronGroup(f"layer{layer}", s.hidden_size, axes))
        return SymmetrySpec(groups)

    def init(self, num_models, generator=None, device="cpu", dtype=torch.float32) -> Params:
        """torch's defaults: LSTM U(-1/√H, 1/√H); Linear weight and bias U(-1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.sizes.hidden_size)
        params = {}
        for p in self.layout.params:
            u = torch.rand((num_models, *p.shape), generator=generator, dtype=dtype)
            params[p.name] = (u * 2 - 1).mul_(bound).to(device)
        return params

    def initial_state(self, params: Params, batch_size: int):
        ref = params["linear.weight"]  # (M, O, H)
        M, H = ref.shape[0], self.sizes.hidden_size
        zeros = ref.new_zeros(M, batch_size, H)
        return tuple((zeros, zeros) for _ in range(self.sizes.num_layers))

    @staticmethod
    def _cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gates: (M, B, 4H) pre-activations; c: (M, B, H) -> (h, c)."""
        i, f, g, o = gates.chunk(GATES, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

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
        """xs: (M, B, T, I) -> ys: (M, B, T, O). When gradients are needed, the hand-written
        forward/backward of ``wspace_lstm.sequence`` (same values, far less autograd overhead).
        Otherwise layer by layer: each layer's input projection is one batched matmul over all
        time steps; only the recurrent matmul stays in the time loop."""
        M, B, T, _ = xs.shape
        if state is None:
            state = self.initial_state(params, B)
        if _needs_grad(params, xs, state):
            return lstm_sequence(params, xs, state, self.sizes.num_layers)
        inp = rearrange(xs, "m b t i -> m (b t) i")
        final = []
        for layer, (h, c) in enumerate(state):
            bias = params[f"lstm.bias_ih_l{layer}"] + params[f"lstm.bias_hh_l{layer}"]  # (M, 4H)
            w_ih_t = params[f"lstm.weight_ih_l{layer}"].transpose(1, 2).contiguous()  # (M, I, 4H): a
            proj = torch.baddbmm(bias.unsqueeze(1), inp, w_ih_t)  # transposed view runs ~4x slower
            proj = rearrange(proj, "m (b t) g -> m b t g", b=B)  # (M, B, T, 4H)
            w_hh_t = params[f"lstm.weight_hh_l{layer}"].transpose(1, 2).contiguous()  # (M, H, 4H)
            hs = []
            for gx in proj.unbind(dim=2):  # (M, B, 4H) per step
                h, c = self._cell(gx.baddbmm(h, w_hh_t), c)
                hs.append(h)
            final.append((h, c))
            inp = rearrange(torch.stack(hs, dim=2), "m b t h -> m (b t) h")
        ys = torch.baddbmm(params["linear.bias"].unsqueeze(1), inp, params["linear.weight"].transpose(1, 2))
        return rearrange(ys, "m (b t) o -> m b t o", b=B), tuple(final)
