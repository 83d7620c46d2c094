"""The LSTM plugin equals torch.nn.LSTM + nn.Linear, and its symmetry spec is right."""

import itertools

import pytest
import torch

from reference_models import torch_lstm_reference

from wspace_core import plugins
from wspace_core.architecture import Sizes

SIZES = [
    Sizes(input_size=i, hidden_size=h, output_size=o, num_layers=layers)
    for (i, h, o), layers in itertools.product([(6, 32, 6), (3, 7, 5), (16, 11, 10), (1, 4, 2)], [1, 2, 3])
]


def _lstm(sizes):
    return plugins.architectures().get("lstm")(sizes)




@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_layout_matches_torch_parameters(sizes):
    arch = _lstm(sizes)
    module = torch_lstm_reference(sizes, torch.zeros(arch.layout.num_params))
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == [
        (p.name, p.shape) for p in arch.layout.params
    ]


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_outputs_and_states_equal_torch(sizes):
    gen = torch.Generator().manual_seed(hash(str(sizes)) % 2**31)
    arch = _lstm(sizes)
    M, B, T = 4, 3, 9
    params = arch.init(M, gen)
    xs = torch.randn(M, B, T, sizes.input_size, generator=gen)
    ys, state = arch.forward(params, xs)
    # the step contract gives the same as the whole-sequence method
    step_state, step_ys = arch.initial_state(params, B), []
    for x in xs.unbind(2):
        y, step_state = arch.step(params, x, step_state)
        step_ys.append(y)
    assert (torch.stack(step_ys, 2) - ys).abs().max() <= 1e-5
    flat = arch.layout.flatten(params)
    for m in range(M):
        module = torch_lstm_reference(sizes, flat[m])
        hs, (h_n, c_n) = module["lstm"](xs[m])
        ref = module["linear"](hs)
        assert (ref - ys[m]).abs().max() <= 1e-5
        for layer in range(sizes.num_layers):
            for ours, theirs in ((state[layer][0][m], h_n[layer]), (state[layer][1][m], c_n[layer])):
                assert (ours - theirs).abs().max() <= 1e-5
            assert (step_state[layer][0][m] - h_n[layer]).abs().max() <= 1e-5


def test_flatten_unflatten_roundtrip():
    arch = _lstm(Sizes(6, 32, 6, 2))
    flat = torch.randn(5, arch.layout.num_params)
    assert torch.equal(arch.layout.flatten(arch.layout.unflatten(flat)), flat)


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_correct_permutation_keeps_function(sizes):
    gen = torch.Generator().manual_seed(1)
    arch = _lstm(sizes)
    params = arch.init(3, gen)
    xs = torch.randn(3, 2, 7, sizes.input_size, generator=gen)
    perms = arch.symmetry.random_permutations(3, gen)
    permuted = arch.symmetry.apply(params, perms)
    assert any(not torch.equal(permuted[k], params[k]) for k in params) or sizes.hidden_size == 1
    assert (arch.forward(permuted, xs)[0] - arch.forward(params, xs)[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("sizes", [s for s in SIZES if s.hidden_size >= 4], ids=str)
def test_incomplete_permutation_changes_function(sizes):
    """Leaving out any single axis of a group (e.g. rows permuted but not the next layer's
    columns) changes the outputs."""
    gen = torch.Generator().manual_seed(2)
    arch = _lstm(sizes)
    params = arch.init(2, gen)
    xs = torch.randn(2, 4, 6, sizes.input_size, generator=gen)
    reference = arch.forward(params, xs)[0]
    perms = arch.symmetry.random_permutations(2, gen)
    # make sure no permutation is the identity
    perms = {k: torch.roll(torch.arange(v.shape[1]), 1).expand_as(v) for k, v in perms.items()}
    all_axes = arch.symmetry.all_axes()
    for left_out in all_axes:
        partial = arch.symmetry.apply(params, perms, only=[a for a in all_axes if a != left_out])
        assert (arch.forward(partial, xs)[0] - reference).abs().max() > 1e-3, left_out


def test_symmetry_spec_covers_lstm_axes():
    arch = _lstm(Sizes(6, 8, 6, 2))
    spec = arch.symmetry
    assert [g.name for g in spec.groups] == ["layer0", "layer1"]
    assert {(a.param, a.axis, a.blocks) for a in spec.group("layer0").axes} == {
        ("lstm.weight_ih_l0", 0, 4), ("lstm.weight_hh_l0", 0, 4), ("lstm.bias_ih_l0", 0, 4),
        ("lstm.bias_hh_l0", 0, 4), ("lstm.weight_hh_l0", 1, 1), ("lstm.weight_ih_l1", 1, 1),
    }
    assert ("linear.weight", 1, 1) in {(a.param, a.axis, a.blocks) for a in spec.group("layer1").axes}


def test_impossible_sizes_rejected():
    from wspace_core.registry import WspaceError

    for bad in [dict(input_size=0, hidden_size=4, output_size=2), dict(input_size=3, hidden_size=-1, output_size=2),
                dict(input_size=3, hidden_size=4, output_size=2, num_layers=0)]:
        with pytest.raises(WspaceError, match="positive integer"):
            Sizes(**bad)
