"""The GRU example plugin (examples/wspace_gru, installed on its own): it equals torch.nn.GRU +
nn.Linear, its symmetry spec is right, wspace discovers it through its entry point, the encoders
work on it unchanged, and `wspace run --arch gru` runs end to end."""

import importlib.metadata
import json
import itertools
import zlib

import pytest
import torch

pytest.importorskip("wspace_gru", reason="install the example: pip install -e examples/wspace_gru")

from wspace_core import plugins  # noqa: E402
from wspace_core.architecture import Sizes  # noqa: E402
from wspace_core.encoder import EncoderContext, encode  # noqa: E402

SIZES = [
    Sizes(input_size=i, hidden_size=h, output_size=o, num_layers=layers)
    for (i, h, o), layers in itertools.product([(6, 32, 6), (3, 7, 5), (16, 11, 10), (1, 4, 2)], [1, 2, 3])
]


def _gru(sizes):
    return plugins.architectures().get("gru")(sizes)


def _seed(sizes) -> int:
    """A seed per size that is the same in every process (``hash(str)`` is not)."""
    return zlib.crc32(str(sizes).encode())


def _reference(sizes, flat_row):
    gru = torch.nn.GRU(sizes.input_size, sizes.hidden_size, sizes.num_layers, batch_first=True)
    linear = torch.nn.Linear(sizes.hidden_size, sizes.output_size)
    module = torch.nn.ModuleDict({"gru": gru, "linear": linear})
    torch.nn.utils.vector_to_parameters(flat_row, module.parameters())
    return module


def _rolled(spec, num_models):
    """A permutation of every group that moves every neuron (so it is never the identity)."""
    return {g.name: torch.roll(torch.arange(g.size), 1).expand(num_models, g.size).clone()
            for g in spec.groups}


# -- the architecture ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_layout_matches_torch_parameters(sizes):
    arch = _gru(sizes)
    module = _reference(sizes, torch.zeros(arch.layout.num_params))
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == [
        (p.name, p.shape) for p in arch.layout.params
    ]


@pytest.mark.parametrize("chunk_steps", [None, 1, 2], ids=["one_chunk", "chunk1", "chunk2"])
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_outputs_and_final_states_equal_torch(sizes, chunk_steps, monkeypatch):
    """forward and the step contract both equal torch, also when forward cuts time into chunks
    (9 steps in chunks of 1, or of 2 with a shorter last one)."""
    gen = torch.Generator().manual_seed(_seed(sizes))
    arch = _gru(sizes)
    M, B, T = 4, 3, 9
    if chunk_steps is not None:
        import wspace_gru.gru

        monkeypatch.setattr(wspace_gru.gru, "CHUNK_ELEMENTS", chunk_steps * M * B * 3 * sizes.hidden_size)
    params = arch.init(M, gen)
    xs = torch.randn(M, B, T, sizes.input_size, generator=gen)
    # a non-zero starting state too: torch takes it as h_0 of shape (layers, B, H)
    h0 = tuple(torch.randn(M, B, sizes.hidden_size, generator=gen) for _ in range(sizes.num_layers))
    flat = arch.layout.flatten(params)
    for start in (None, h0):
        ys, state = arch.forward(params, xs, start)
        step_state = arch.initial_state(params, B) if start is None else start
        step_ys = []
        for x in xs.unbind(2):
            y, step_state = arch.step(params, x, step_state)
            step_ys.append(y)
        step_ys = torch.stack(step_ys, 2)
        for m in range(M):
            module = _reference(sizes, flat[m])
            ref_h0 = None if start is None else torch.stack([h[m] for h in start])
            hs, h_n = module["gru"](xs[m], ref_h0)
            ref = module["linear"](hs)  # (B, T, O)
            assert (ys[m] - ref).abs().max() <= 1e-5
            assert (step_ys[m] - ref).abs().max() <= 1e-5
            for layer in range(sizes.num_layers):
                assert (state[layer][m] - h_n[layer]).abs().max() <= 1e-5
                assert (step_state[layer][m] - h_n[layer]).abs().max() <= 1e-5


def test_initial_state_is_zeros_of_params_dtype():
    arch = _gru(Sizes(3, 5, 2, 2))
    params = arch.init(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    state = arch.initial_state(params, 7)
    assert len(state) == 2
    for h in state:
        assert h.shape == (4, 7, 5) and h.dtype == torch.float64 and not h.any()


def test_init_is_torch_default_uniform():
    sizes = Sizes(5, 25, 3, 2)
    arch = _gru(sizes)
    params = arch.init(64, torch.Generator().manual_seed(0))
    bound = 1 / sizes.hidden_size ** 0.5
    assert set(params) == set(arch.layout.names)
    for p in arch.layout.params:
        value = params[p.name]
        assert value.shape == (64, *p.shape)
        assert value.abs().max() <= bound
        # U(-b, b): mean 0, std b/√3
        assert abs(value.mean()) < 0.05 * bound
        assert abs(value.std() - bound / 3 ** 0.5) < 0.05 * bound
    again = arch.init(64, torch.Generator().manual_seed(0))
    assert all(torch.equal(params[k], again[k]) for k in params)


def test_forward_is_differentiable():
    arch = _gru(Sizes(3, 6, 4, 2))
    params = {k: v.requires_grad_() for k, v in arch.init(2, torch.Generator().manual_seed(3)).items()}
    ys, _ = arch.forward(params, torch.randn(2, 3, 5, 3, generator=torch.Generator().manual_seed(4)))
    ys.square().sum().backward()
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in params)


# -- the symmetry spec --------------------------------------------------------------------------

def test_symmetry_spec_covers_gru_axes():
    arch = _gru(Sizes(6, 8, 6, 2))
    spec = arch.symmetry
    assert [(g.name, g.size) for g in spec.groups] == [("layer0", 8), ("layer1", 8)]
    assert {(a.param, a.axis, a.blocks) for a in spec.group("layer0").axes} == {
        ("gru.weight_ih_l0", 0, 3), ("gru.weight_hh_l0", 0, 3), ("gru.bias_ih_l0", 0, 3),
        ("gru.bias_hh_l0", 0, 3), ("gru.weight_hh_l0", 1, 1), ("gru.weight_ih_l1", 1, 1),
    }
    assert {(a.param, a.axis, a.blocks) for a in spec.group("layer1").axes} == {
        ("gru.weight_ih_l1", 0, 3), ("gru.weight_hh_l1", 0, 3), ("gru.bias_ih_l1", 0, 3),
        ("gru.bias_hh_l1", 0, 3), ("gru.weight_hh_l1", 1, 1), ("linear.weight", 1, 1),
    }


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_correct_permutation_keeps_function(sizes):
    gen = torch.Generator().manual_seed(1)
    arch = _gru(sizes)
    params = arch.init(3, gen)
    xs = torch.randn(3, 2, 7, sizes.input_size, generator=gen)
    perms = arch.symmetry.random_permutations(3, gen)
    permuted = arch.symmetry.apply(params, perms)
    assert any(not torch.equal(permuted[k], params[k]) for k in params)
    ys, state = arch.forward(params, xs)
    ys_p, state_p = arch.forward(permuted, xs)
    assert (ys_p - ys).abs().max() <= 1e-5
    # the hidden states are the same neurons, reordered by the permutation
    for layer, (h, h_p) in enumerate(zip(state, state_p)):
        perm = perms[f"layer{layer}"]  # (M, H): new neuron i is old neuron perm[i]
        assert (h_p - torch.take_along_dim(h, perm[:, None, :], dim=2)).abs().max() <= 1e-5


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_incomplete_permutation_changes_function(sizes):
    """Leaving out any single axis (e.g. a layer's rows permuted but not its reader's columns)
    changes the outputs."""
    gen = torch.Generator().manual_seed(2)
    arch = _gru(sizes)
    params = arch.init(2, gen)
    xs = torch.randn(2, 4, 6, sizes.input_size, generator=gen)
    reference = arch.forward(params, xs)[0]
    perms = _rolled(arch.symmetry, 2)
    all_axes = arch.symmetry.all_axes()
    assert len(all_axes) == 6 * sizes.num_layers
    assert (arch.forward(arch.symmetry.apply(params, perms, only=all_axes), xs)[0]
            - reference).abs().max() <= 1e-5
    for left_out in all_axes:
        partial = arch.symmetry.apply(params, perms, only=[a for a in all_axes if a != left_out])
        assert (arch.forward(partial, xs)[0] - reference).abs().max() > 1e-3, left_out


# -- discovery through the entry point ----------------------------------------------------------

def test_discovered_through_entry_point():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="wspace")}
    assert "gru" in eps and eps["gru"].value == "wspace_gru"
    assert eps["gru"].dist.name == "wspace-gru"
    info = {p["name"]: p for p in plugins.plugin_info()}
    assert info["gru"]["version"] == "0.1.0"
    assert info["gru"]["bundled"] is False
    assert info["gru"]["hooks"] == ["register_architectures"]
    import wspace_gru

    assert plugins.architectures().get("gru") is wspace_gru.GRU
    assert plugins.architectures().owner("gru") == "gru"


# -- encoders on GRU weights --------------------------------------------------------------------

ENCODER_SIZES = Sizes(input_size=5, hidden_size=8, output_size=4, num_layers=2)


def _encoder(name, arch):
    context = EncoderContext(
        layout=arch.layout, symmetry=arch.symmetry, sizes=arch.sizes,
        input_size=arch.sizes.input_size, output_size=arch.sizes.output_size,
        input_kind="onehot", output_kind="categorical", sequence_length=10, z_dim=16, preset="smoke")
    torch.manual_seed(0)
    return plugins.encoders().get(name)(context).eval()


@pytest.mark.parametrize("name", ["dwsnet", "interactive_probing"])
def test_encoder_invariant_to_correct_permutation(name):
    arch = _gru(ENCODER_SIZES)
    gen = torch.Generator().manual_seed(5)
    params = arch.init(6, gen)
    permuted = arch.symmetry.apply(params, arch.symmetry.random_permutations(6, gen))
    encoder = _encoder(name, arch)
    with torch.no_grad():
        z = encode(encoder, arch, params)
        z_p = encode(encoder, arch, permuted)
        z_other = encode(encoder, arch, arch.init(6, gen))
    assert z.shape == (6, 16) and torch.isfinite(z).all()
    assert (z_p - z).abs().max() <= 1e-5
    assert (z_other - z).abs().max() > 1e-3  # z does depend on the weights


@pytest.mark.parametrize("left_out", range(6 * ENCODER_SIZES.num_layers))
def test_dwsnet_changed_by_incomplete_permutation(left_out):
    arch = _gru(ENCODER_SIZES)
    params = arch.init(4, torch.Generator().manual_seed(6))
    all_axes = arch.symmetry.all_axes()
    partial = arch.symmetry.apply(params, _rolled(arch.symmetry, 4),
                                  only=[a for i, a in enumerate(all_axes) if i != left_out])
    encoder = _encoder("dwsnet", arch)
    with torch.no_grad():
        z, z_partial = encode(encoder, arch, params), encode(encoder, arch, partial)
    # correct permutation: ~1e-7; the published DWSNet layer's smallest change here is 5e-5
    # (columns of the second layer's W_ih left out)
    assert (z_partial - z).abs().max(dim=1).values.min() > 1e-5, all_axes[left_out]


# -- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One out dir for both encoders: the first run builds the GRU zoo, the other reuses it."""
    return tmp_path_factory.mktemp("gru_runs")


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["interactive_probing", "dwsnet"])
def test_wspace_run_smoke_with_gru(run_dir, encoder):
    from click.testing import CliRunner

    from wspace.cli import cli

    result = CliRunner().invoke(cli, [
        "run", "--arch", "gru", "--task", "formal_languages", "--encoder", encoder,
        "--preset", "smoke", "--no-tracking", "--out-dir", str(run_dir),
    ])
    assert result.exit_code == 0, (result.output, result.exception)
    manifests = [json.loads(p.read_text()) for p in run_dir.rglob("manifest.json")]
    assert [m["architecture"]["name"] for m in manifests if m.get("format") == "wspace-zoo"] == ["gru"]
