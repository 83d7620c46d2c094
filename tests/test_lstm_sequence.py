"""The LSTM plugin's hand-written training path (wspace_lstm.sequence) equals torch.nn.LSTM +
nn.Linear under autograd: outputs, final states and every gradient."""

import itertools

import pytest
import torch

from reference_models import torch_lstm_reference

from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace_lstm.sequence import POOL, LSTMSequence, lstm_sequence

SIZES = [Sizes(i, h, o, layers) for (i, h, o), layers in itertools.product([(6, 32, 6), (3, 7, 5), (1, 4, 2)], [1, 2, 3])]




@pytest.mark.parametrize("T", [1, 9])
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_values_and_gradients_equal_torch_lstm(sizes, T):
    gen = torch.Generator().manual_seed(7 * T + sizes.num_layers)
    arch = plugins.architectures().get("lstm")(sizes)
    M, B, L, H = 3, 4, sizes.num_layers, sizes.hidden_size
    params = {k: v.requires_grad_() for k, v in arch.init(M, gen).items()}
    xs = torch.randn(M, B, T, sizes.input_size, generator=gen, requires_grad=True)
    h0 = torch.randn(L, M, B, H, generator=gen, requires_grad=True)
    c0 = torch.randn(L, M, B, H, generator=gen, requires_grad=True)
    state = tuple((h0[layer], c0[layer]) for layer in range(L))
    ys, final = arch.forward(params, xs, state)  # grad enabled: the hand-written path
    w_y = torch.randn(ys.shape, generator=gen)
    w_h, w_c = torch.randn(M, B, H, generator=gen), torch.randn(M, B, H, generator=gen)
    loss = (ys * w_y).sum() + (final[-1][0] * w_h).sum() + (final[0][1] * w_c).sum()
    ours = torch.autograd.grad(loss, [*params.values(), xs, h0, c0])

    flat = arch.layout.flatten({k: v.detach() for k, v in params.items()})
    for m in range(M):
        module = torch_lstm_reference(sizes, flat[m])
        x = xs[m].detach().requires_grad_()
        h, c = h0[:, m].detach().requires_grad_(), c0[:, m].detach().requires_grad_()
        hs, (h_n, c_n) = module["lstm"](x, (h, c))
        y = module["linear"](hs)
        assert (y - ys[m]).abs().max() <= 1e-5
        for layer in range(L):
            assert (h_n[layer] - final[layer][0][m]).abs().max() <= 1e-5
            assert (c_n[layer] - final[layer][1][m]).abs().max() <= 1e-5
        ref_loss = (y * w_y[m]).sum() + (h_n[-1] * w_h[m]).sum() + (c_n[0] * w_c[m]).sum()
        theirs = torch.autograd.grad(ref_loss, [*module.parameters(), x, h, c])
        for ours_g, their_g in zip(ours[: len(params)], theirs[: len(params)]):
            assert (ours_g[m] - their_g).abs().max() <= 1e-4
        assert (ours[-3][m] - theirs[-3]).abs().max() <= 1e-4  # xs
        assert (ours[-2][:, m] - theirs[-2]).abs().max() <= 1e-4  # h0
        assert (ours[-1][:, m] - theirs[-1]).abs().max() <= 1e-4  # c0


def test_gradcheck_in_double():
    sizes = Sizes(3, 4, 2, 2)
    arch = plugins.architectures().get("lstm")(sizes)
    gen = torch.Generator().manual_seed(0)
    params = arch.init(2, gen, dtype=torch.float64)
    xs = torch.randn(2, 3, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    names = list(params)

    def f(x, *weights):
        ys, state = lstm_sequence(dict(zip(names, weights)), x, arch.initial_state(params, 3), 2)
        return ys, state[1][1]

    assert torch.autograd.gradcheck(f, (xs, *[p.requires_grad_() for p in params.values()]))


def test_a_graph_can_be_backpropagated_twice():
    arch = plugins.architectures().get("lstm")(Sizes(3, 4, 2, 1))
    params = {k: v.requires_grad_() for k, v in arch.init(2).items()}
    ys, _ = arch.forward(params, torch.randn(2, 3, 5, 3))
    first = torch.autograd.grad(ys.sum(), list(params.values()), retain_graph=True)
    second = torch.autograd.grad(ys.sum(), list(params.values()))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_double_backward_is_refused():
    arch = plugins.architectures().get("lstm")(Sizes(3, 4, 2, 1))
    params = {k: v.requires_grad_() for k, v in arch.init(2).items()}
    ys, _ = arch.forward(params, torch.randn(2, 3, 5, 3))
    (g,) = torch.autograd.grad(ys.square().sum(), [params["linear.weight"]], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_without_gradients_the_plain_path_gives_the_same_values():
    arch = plugins.architectures().get("lstm")(Sizes(6, 8, 6, 2))
    params = arch.init(3, torch.Generator().manual_seed(1))
    xs = torch.randn(3, 4, 7, 6)
    with torch.no_grad():
        plain, _ = arch.forward(params, xs)
    fast, _ = arch.forward({k: v.clone().requires_grad_() for k, v in params.items()}, xs)
    assert (plain - fast).abs().max() <= 1e-5
    assert POOL.take((1,), xs).shape == (1,)  # the pool hands out buffers of any shape


def test_function_signature_documents_its_outputs():
    assert "Returns (ys" in LSTMSequence.__doc__
