"""A whole-sequence stacked LSTM + linear read-out for M networks at once: what ``LSTM.forward``
runs. With gradients, a hand-written backward (zoo training); without, a loop that stores only
the outputs (evaluation, rollouts).

Why hand-written: autograd records ~10 small nodes per time step and layer and replays them in
the backward. Here the forward keeps only what the backward reads, in time-major buffers; each
step is one matmul and a few elementwise ops; every weight gradient of a layer is one batched
matmul over all steps. On CPU the elementwise memory traffic is the cost, so:

- a layer's step input is one buffer row [x_t | h_{t-1} | 1] and its weights one matrix
  [W_ih | W_hh | b]: one matmul gives the gate pre-activations, bias included, and one matmul
  over all steps gives dW_ih, dW_hh and db;
- gates are kept internally in the order (i, f, o, g), and the g rows of the forward's weight
  copy are doubled, so ONE sigmoid covers all four gates: tanh(a) = 2 sigmoid(2a) - 1 (torch's
  CPU tanh costs ~3.5x its sigmoid); tanh(c) is computed the same way, in place. The cell
  state c_{t-1} is stored next to the gates, so i and f are differentiated in one op;
- the big buffers come from a small pool, so a training loop reuses them instead of returning
  them to the OS between steps (page faults).

Shapes: M models, B sequences, T steps, H hidden, G = 4H gate pre-activations, D = I + H + 1.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import torch
from einops import rearrange
from torch.autograd.function import once_differentiable

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * y (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # grad * (1 - y²)


class _BufferPool:
    """Free big tensors by (shape, dtype, device), reused across training steps; thread-safe
    (model groups may train in parallel threads). Holds at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._free: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        with self._lock:
            free = self._free.get((tuple(shape), like.dtype, like.device))
            if free:
                t = free.pop()
                self._bytes -= t.numel() * t.element_size()
                return t
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def give(self, *tensors: torch.Tensor) -> None:
        with self._lock:
            for t in tensors:
                size = t.numel() * t.element_size()
                if self._bytes + size <= self.max_bytes:
                    self._free[(tuple(t.shape), t.dtype, t.device)].append(t)
                    self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._bytes = 0


#: buffers of the last training step, reused by the next (``POOL.clear()`` frees them)
POOL = _BufferPool()


class _Saved:
    """A forward's buffers, handed back to the pool when the autograd graph holding them dies
    (so a graph may be backpropagated more than once, e.g. with retain_graph=True)."""

    def __init__(self, layers: list[tuple[torch.Tensor, ...]]):
        self.layers = layers

    def __del__(self):
        for xh, acts, tanh_cells, _ in self.layers:
            POOL.give(*(t for t in (xh, acts, tanh_cells) if t is not None))


def _gates_to_internal(w: torch.Tensor) -> torch.Tensor:
    """(M, 4H, ...) rows in torch's gate order (i, f, g, o) -> (i, f, o, g)."""
    i, f, g, o = w.chunk(4, dim=1)
    return torch.cat([i, f, o, g], dim=1)


def _gates_to_torch(w: torch.Tensor) -> torch.Tensor:
    """(M, 4H, ...) rows in the internal gate order (i, f, o, g) -> (i, f, g, o)."""
    i, f, o, g = w.chunk(4, dim=1)
    return torch.cat([i, f, g, o], dim=1)


def _layer_forward(xh: torch.Tensor, w_rows: torch.Tensor, c0: torch.Tensor, keep: bool = True):
    """One layer over all steps, in place in ``xh`` (M, T+1, B, D): row t holds [x_t | h_{t-1} | 1]
    on entry (x for every t, h_{-1}, the ones); h_t is written into row t+1.
    ``w_rows`` (M, G, D): [W_ih | W_hh | b] with gate rows in the internal order.

    Returns acts (M, T, B, G + H): per step [i, f, o, g | c_{t-1}]; tanh(c_t) (M, T, B, H); c_T.
    ``keep=False`` (no backward to come): only the outputs in ``xh`` and c_T; acts and tanh(c)
    are None."""
    M, T1, B, D = xh.shape
    T, G = T1 - 1, w_rows.shape[1]
    H = G // 4
    I = D - H - 1
    w_cols = _sigmoid_weights(w_rows)  # (M, D, G), g columns doubled
    if not keep:
        return None, None, _outputs_only(xh, w_cols, c0)
    acts = POOL.take((M, T, B, G + H), xh)
    tanh_cells = POOL.take((M, T, B, H), xh)
    acts[:, 0, :, G:] = c0
    c_last = xh.new_empty(M, B, H)
    pre = xh.new_empty(M, B, G)
    # per-step views made once (unbind), not sliced anew in the loop
    rows, h_out = xh.unbind(1), xh[..., I: I + H].unbind(1)  # row t+1 receives h_t
    gates, g_act = acts[..., :G].unbind(1), acts[..., 3 * H: G].unbind(1)
    i_act, f_act, o_act = (acts[..., k * H: (k + 1) * H].unbind(1) for k in range(3))
    cells, tcs = acts[..., G:].unbind(1), tanh_cells.unbind(1)  # cells[t] = c_{t-1}
    for t in range(T):
        torch.bmm(rows[t], w_cols, out=pre)  # (M, B, D) @ (M, D, G): [i, f, o, 2 g] pre-activations
        torch.sigmoid(pre, out=gates[t])
        g_act[t].mul_(2).sub_(1)  # tanh(g) = 2 sigmoid(2 g) - 1
        c = cells[t + 1] if t + 1 < T else c_last
        torch.mul(f_act[t], cells[t], out=c)
        c.addcmul_(i_act[t], g_act[t])
        _tanh_into(c, tcs[t])
        torch.mul(o_act[t], tcs[t], out=h_out[t + 1])
    return acts, tanh_cells, c_last


def _sigmoid_weights(w_rows: torch.Tensor) -> torch.Tensor:
    """(M, G, D) rows in the internal gate order -> (M, D, G) columns with the g gate's doubled,
    so one sigmoid of the product gives i, f, o and (g + 1) / 2."""
    w_cols = w_rows.transpose(1, 2).contiguous()
    w_cols[..., 3 * (w_cols.shape[2] // 4):] *= 2
    return w_cols


def _tanh_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = tanh(x) = 2 sigmoid(2 x) - 1, without temporaries."""
    torch.add(x, x, out=out)
    return out.sigmoid_().mul_(2).sub_(1)


def _outputs_only(xh: torch.Tensor, w_cols: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """The forward loop without storing activations (evaluation): gates in place in one buffer."""
    M, T1, B, D = xh.shape
    G = w_cols.shape[2]
    H = G // 4
    I = D - H - 1
    pre, c, tc = xh.new_empty(M, B, G), c0.clone(), xh.new_empty(M, B, H)
    i, f, o, g = pre.chunk(4, dim=-1)
    rows, h_out = xh.unbind(1), xh[..., I: I + H].unbind(1)
    for t in range(T1 - 1):
        torch.bmm(rows[t], w_cols, out=pre)  # g columns doubled (_sigmoid_weights)
        pre.sigmoid_()
        g.mul_(2).sub_(1)
        c.mul_(f).addcmul_(i, g)
        _tanh_into(c, tc)
        torch.mul(o, tc, out=h_out[t + 1])
    return c


def _layer_backward(d_hs: torch.Tensor, acts: torch.Tensor, tanh_cells: torch.Tensor,
                    w_hh: torch.Tensor, d_h_last: torch.Tensor | None, d_c_last: torch.Tensor | None,
                    d_gates: torch.Tensor):
    """Backward through one layer's time loop. ``d_hs`` (M, T, B, H): the gradient reaching each
    step's output from above (changed in place); ``d_gates`` (M, T, B, G) receives the gradient
    of the gate pre-activations. ``w_hh`` (M, G, H), internal gate order.
    Returns the gradients of the initial h and c."""
    M, T, B, GH = acts.shape
    H = GH // 5
    G = 4 * H
    if d_h_last is not None:
        d_hs[:, T - 1] += d_h_last
    dc_next = d_c_last.clone() if d_c_last is not None else d_hs.new_zeros(M, B, H)  # dc_{t+1} f_{t+1}
    dc, dh_buf = d_hs.new_empty(M, B, H), d_hs.new_empty(M, B, H)
    tmp_a, tmp_b = d_hs.new_empty(M, B, H), d_hs.new_empty(M, B, H)
    tmp_gc = d_hs.new_empty(M, B, 2 * H)  # [dc g, dc c_{t-1}]: upstream of i and f, side by side
    tmp_g, tmp_c = tmp_gc[..., :H], tmp_gc[..., H:]
    i_act, f_act, o_act, g_act = (acts[..., k * H: (k + 1) * H].unbind(1) for k in range(4))
    i_f, cells, tcs = acts[..., : 2 * H].unbind(1), acts[..., G:].unbind(1), tanh_cells.unbind(1)
    d_all, d_i_f = d_gates.unbind(1), d_gates[..., : 2 * H].unbind(1)
    d_o, d_g = d_gates[..., 2 * H: 3 * H].unbind(1), d_gates[..., 3 * H:].unbind(1)
    d_from_above = d_hs.unbind(1)
    dh = d_from_above[T - 1]
    for t in range(T - 1, -1, -1):
        o, tc = o_act[t], tcs[t]
        torch.mul(dh, o, out=tmp_a)
        torch.mul(dh, tc, out=tmp_b)
        _sigmoid_backward(tmp_b, o, grad_input=d_o[t])  # d pre_o = dh tc o (1 - o)
        _tanh_backward(tmp_a, tc, grad_input=dc)  # dc = dh o (1 - tc²) + dc_{t+1} f_{t+1}
        dc.add_(dc_next)
        torch.mul(dc, i_act[t], out=tmp_a)
        torch.mul(dc, f_act[t], out=dc_next)
        torch.mul(dc, g_act[t], out=tmp_g)
        torch.mul(dc, cells[t], out=tmp_c)
        _tanh_backward(tmp_a, g_act[t], grad_input=d_g[t])  # d pre_g = dc i (1 - g²)
        _sigmoid_backward(tmp_gc, i_f[t], grad_input=d_i_f[t])  # d pre_i, d pre_f
        if t > 0:
            # dh_{t-1} = (gradient from above) + d gates_t @ W_hh
            dh = torch.baddbmm(d_from_above[t - 1], d_all[t], w_hh, out=dh_buf)
    d_h0 = torch.bmm(d_all[0], w_hh)
    return d_h0, dc_next


def _sequence_forward(num_layers: int, xs: torch.Tensor, tensors: tuple[torch.Tensor, ...], keep: bool):
    """ys (M, B, T, O), [h_T, c_T per layer], and per layer (xh, acts, tanh_cells, w_rows)."""
    L = num_layers
    weights, (lin_w, lin_b), states = tensors[: 4 * L], tensors[4 * L: 4 * L + 2], tensors[4 * L + 2:]
    M, B, T, _ = xs.shape
    H = weights[1].shape[2]
    x_in = rearrange(xs, "m b t i -> m t b i")
    saved, final = [], []
    for layer in range(L):
        w_ih, w_hh, b_ih, b_hh = weights[4 * layer: 4 * layer + 4]
        h0, c0 = states[2 * layer], states[2 * layer + 1]
        I = w_ih.shape[2]
        xh = POOL.take((M, T + 1, B, I + H + 1), xs)
        xh[:, :T, :, :I] = x_in
        xh[:, 0, :, I: I + H] = h0
        xh[..., I + H] = 1
        w_rows = _gates_to_internal(torch.cat([w_ih, w_hh, (b_ih + b_hh).unsqueeze(2)], dim=2))
        acts, tanh_cells, c_last = _layer_forward(xh, w_rows, c0, keep)
        saved.append((xh, acts, tanh_cells, w_rows))
        x_in = xh[:, 1:, :, I: I + H]  # (M, T, B, H): this layer's outputs h_0..h_{T-1}
        final += [x_in[:, T - 1].clone(), c_last]
    hs = x_in.reshape(M, T * B, H)  # a strided view, no copy
    ys = torch.baddbmm(lin_b.unsqueeze(1), hs, lin_w.transpose(1, 2))  # (M, TB, O)
    return rearrange(ys, "m (t b) o -> m b t o", b=B).contiguous(), final, saved


class LSTMSequence(torch.autograd.Function):
    """forward(num_layers, xs, *tensors) with tensors = per layer (w_ih, w_hh, b_ih, b_hh),
    then (linear.weight, linear.bias), then per layer (h0, c0).
    Returns (ys (M, B, T, O), then per layer h_T, c_T)."""

    @staticmethod
    def forward(ctx, num_layers: int, xs: torch.Tensor, *tensors: torch.Tensor):
        ys, final, saved = _sequence_forward(num_layers, xs, tensors, keep=True)
        ctx.num_layers = num_layers
        ctx.saved = _Saved(saved)
        ctx.save_for_backward(tensors[4 * num_layers])  # linear.weight
        ctx.set_materialize_grads(False)
        return (ys, *final)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_ys: torch.Tensor | None, *d_final: torch.Tensor | None):
        L = ctx.num_layers
        (lin_w,) = ctx.saved_tensors
        buffers = ctx.saved.layers
        xh_top = buffers[-1][0]
        M, T1, B, D = xh_top.shape
        T, O, H = T1 - 1, lin_w.shape[1], lin_w.shape[2]
        G = 4 * H
        hs = xh_top[:, 1:, :, D - H - 1: D - 1].reshape(M, T * B, H)  # top layer's outputs
        if d_ys is None:
            d_ys = hs.new_zeros(M, B, T, O)
        d_y = rearrange(d_ys, "m b t o -> m (t b) o").contiguous()  # (M, TB, O)
        d_lin_w = torch.bmm(d_y.transpose(1, 2), hs)
        d_lin_b = d_y.sum(1)
        d_hs = POOL.take((M, T, B, H), d_y)
        torch.bmm(d_y, lin_w, out=d_hs.view(M, T * B, H))
        grads_w: list[torch.Tensor | None] = [None] * (4 * L)
        grads_s: list[torch.Tensor | None] = [None] * (2 * L)
        d_xs = None
        d_gates = POOL.take((M, T, B, G), d_y)
        for layer in range(L - 1, -1, -1):
            xh, acts, tanh_cells, w_rows = buffers[layer]
            I = xh.shape[3] - H - 1
            w_hh = w_rows[..., I: I + H].contiguous()  # (M, G, H)
            grads_s[2 * layer: 2 * layer + 2] = _layer_backward(
                d_hs, acts, tanh_cells, w_hh, d_final[2 * layer], d_final[2 * layer + 1], d_gates)
            d_pre = d_gates.view(M, T * B, G)  # internal gate order
            d_rows = _gates_to_torch(torch.bmm(d_pre.transpose(1, 2), xh[:, :T].reshape(M, T * B, -1)))
            d_b = d_rows[..., I + H].contiguous()  # (M, G): dL/db_ih = dL/db_hh
            grads_w[4 * layer: 4 * layer + 4] = [
                d_rows[..., :I].contiguous(), d_rows[..., I: I + H].contiguous(), d_b, d_b.clone()]
            if layer > 0:
                # the gradient reaching the outputs of the layer below (this layer's inputs)
                torch.bmm(d_pre, w_rows[..., :I], out=d_hs.view(M, T * B, H))
            elif ctx.needs_input_grad[1]:
                d_xs = rearrange(torch.bmm(d_pre, w_rows[..., :I]), "m (t b) i -> m b t i", b=B)
        POOL.give(d_hs, d_gates)
        return (None, d_xs, *grads_w, d_lin_w, d_lin_b, *grads_s)


def lstm_sequence(params: dict[str, torch.Tensor], xs: torch.Tensor, state, num_layers: int):
    """xs: (M, B, T, I), state: per layer (h0, c0) each (M, B, H) -> ys (M, B, T, O), final state.
    Differentiable in every input through LSTMSequence's hand-written backward; without
    gradients, a forward that stores nothing but the outputs."""
    weights = []
    for layer in range(num_layers):
        weights += [params[f"lstm.{kind}_l{layer}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    tensors = (*weights, params["linear.weight"], params["linear.bias"], *(s for pair in state for s in pair))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xs, *tensors)):
        ys, *final = LSTMSequence.apply(num_layers, xs, *tensors)
    else:
        ys, final, saved = _sequence_forward(num_layers, xs, tensors, keep=False)
        _Saved(saved)  # hands the buffers back at once
    return ys, tuple((final[2 * k], final[2 * k + 1]) for k in range(num_layers))
