"""The four mechanistic encoders (plugin wspace_encoders): shapes, the permutation behaviour of
the paper's Table 1, gradients, sizes, options, and a quick fit — on the LSTM plugin at several
sizes and on a GRU-like test architecture with 3 gate blocks and names of its own, to show
nothing is LSTM-specific."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

from wspace_core import plugins
from wspace_core.architecture import Architecture, ParameterLayout, ParamSpec, Sizes
from wspace_core.encoder import EncoderContext, MechanisticEncoder
from wspace_core.hookspecs import hookimpl
from wspace_core.registry import WspaceError
from wspace_core.symmetry import NeuronGroup, PermutedAxis, SymmetrySpec, permute_axis
from wspace_core.presets import PRESETS
from wspace_encoders.dwsnet import DWSNetConfig
from wspace_encoders.layerwise_statistics import LayerwiseStatistics, LayerwiseStatisticsConfig
from wspace_encoders.structure import param_structures, row_sets

ENCODERS = ["layerwise_statistics", "flattened_weights", "parameter_transformer", "dwsnet"]
INVARIANT = {"layerwise_statistics", "dwsnet"}  # paper Table 1: invariant by construction
TOLERANCE = 1e-4


class FakeGRU(Architecture):
    """GRU-like cell, 3 gate blocks (r, z, n), names and layout order unlike the LSTM's:
    per layer bias, recurrent, then input weights; read-out bias before its weight."""

    name = "fake_gru"

    @property
    def layout(self) -> ParameterLayout:
        s, H = self.sizes, self.sizes.hidden_size
        specs = []
        for layer in range(s.num_layers):
            n_in = s.input_size if layer == 0 else H
            specs += [ParamSpec(f"cell{layer}.b", (3 * H,)), ParamSpec(f"cell{layer}.u", (3 * H, H)),
                      ParamSpec(f"cell{layer}.w", (3 * H, n_in))]
        return ParameterLayout(specs + [ParamSpec("head.b", (s.output_size,)),
                                        ParamSpec("head.w", (s.output_size, H))])

    @property
    def symmetry(self) -> SymmetrySpec:
        s, groups = self.sizes, []
        for layer in range(s.num_layers):
            nxt = f"cell{layer + 1}.w" if layer + 1 < s.num_layers else "head.w"
            groups.append(NeuronGroup(f"h{layer}", s.hidden_size, [
                PermutedAxis(f"cell{layer}.b", 0, 3), PermutedAxis(f"cell{layer}.u", 0, 3),
                PermutedAxis(f"cell{layer}.w", 0, 3), PermutedAxis(f"cell{layer}.u", 1, 1),
                PermutedAxis(nxt, 1, 1),
            ]))
        return SymmetrySpec(groups)

    def init(self, num_models, generator=None, device="cpu", dtype=torch.float32):
        scale = 1 / math.sqrt(self.sizes.hidden_size)
        return {p.name: torch.randn((num_models, *p.shape), generator=generator, dtype=dtype) * scale
                for p in self.layout.params}

    def initial_state(self, params, batch_size):
        ref = params["head.w"]
        return tuple(ref.new_zeros(ref.shape[0], batch_size, self.sizes.hidden_size)
                     for _ in range(self.sizes.num_layers))

    def step(self, params, x, state):
        new_state, inp = [], x
        for layer, h in enumerate(state):
            gx = inp @ params[f"cell{layer}.w"].transpose(1, 2) + params[f"cell{layer}.b"][:, None]
            gh = h @ params[f"cell{layer}.u"].transpose(1, 2)  # (M, B, 3H)
            (xr, xz, xn), (hr, hz, hn) = gx.chunk(3, -1), gh.chunk(3, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
            new_state.append(h)
            inp = h
        return inp @ params["head.w"].transpose(1, 2) + params["head.b"][:, None], tuple(new_state)


def _lstm(i, h, o, layers):
    return plugins.architectures().get("lstm")(Sizes(i, h, o, layers))


ARCHS = {
    "lstm-1x5": lambda: _lstm(3, 5, 4, 1),
    "lstm-2x9": lambda: _lstm(4, 9, 2, 2),
    "lstm-2x32-formal": lambda: _lstm(6, 32, 6, 2),
    "fake_gru-2x6": lambda: FakeGRU(Sizes(5, 6, 3, 2)),
}
SMALL_ARCHS = ["lstm-1x5", "lstm-2x9", "fake_gru-2x6"]


def _context(arch, preset="smoke", z_dim=16, **options) -> EncoderContext:
    s = arch.sizes
    return EncoderContext(arch.layout, arch.symmetry, s, s.input_size, s.output_size, "onehot",
                          "categorical", sequence_length=10, z_dim=z_dim, preset=preset, options=options)


def _encoder(name, arch, preset="smoke", seed=0, **options):
    torch.manual_seed(seed)
    return plugins.encoders().get(name)(_context(arch, preset, **options))


def _params(arch, num_models=6, seed=1):
    return arch.init(num_models, torch.Generator().manual_seed(seed))


def test_fake_gru_symmetry_is_a_true_symmetry():
    """Guards the tests below: a correct permutation leaves the fake GRU's function unchanged."""
    arch = FakeGRU(Sizes(5, 6, 3, 2))
    gen = torch.Generator().manual_seed(0)
    params = arch.init(3, gen)
    permuted = arch.symmetry.apply(params, arch.symmetry.random_permutations(3, gen))
    xs = torch.randn(3, 2, 7, 5, generator=gen)
    assert (arch.forward(params, xs)[0] - arch.forward(permuted, xs)[0]).abs().max() < 1e-5


@pytest.mark.parametrize("name", ENCODERS)
def test_registered_by_the_bundled_plugin(name):
    cls = plugins.encoders().get(name)
    assert plugins.encoders().owner(name) == "wspace_encoders"
    assert issubclass(cls, MechanisticEncoder)
    assert cls.permutation_augmentation == (name not in INVARIANT)


def test_a_third_party_encoder_registers_through_the_same_hook(register_plugin, plugin_namespace):
    class Extremes(LayerwiseStatistics):
        """Mean, std, min and max per tensor: a plugin building on the bundled encoder."""

        name = "extremes"

        def __init__(self, context):
            super().__init__(attrs.evolve(context, options={"quantiles": (0.0, 1.0), **context.options}))

    @hookimpl
    def register_encoders(register):
        register("extremes", Extremes)

    plugin_namespace.register_encoders = register_encoders
    register_plugin(plugin_namespace, name="extremes-plugin")
    assert plugins.encoders().owner("extremes") == "extremes-plugin"
    arch = ARCHS["fake_gru-2x6"]()
    encoder = plugins.encoders().get("extremes")(_context(arch))
    assert encoder.mlp[0].in_features == 4 * len(arch.layout.params)
    assert encoder(_params(arch)).shape == (6, 16)


@pytest.mark.parametrize("arch_id", list(ARCHS))
@pytest.mark.parametrize("name", ENCODERS)
def test_output_shape_finite_and_unit_norm(name, arch_id):
    arch = ARCHS[arch_id]()
    z = _encoder(name, arch, z_dim=12)(_params(arch, num_models=5))
    assert z.shape == (5, 12)
    assert torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("arch_id", SMALL_ARCHS + ["lstm-2x32-formal"])
@pytest.mark.parametrize("name", ENCODERS)
def test_hidden_permutation_behaviour_matches_table_1(name, arch_id):
    arch = ARCHS[arch_id]()
    encoder = _encoder(name, arch)
    params = _params(arch)
    gen = torch.Generator().manual_seed(2)
    permuted = arch.symmetry.apply(params, arch.symmetry.random_permutations(6, gen))
    with torch.no_grad():
        change = (encoder(params) - encoder(permuted)).abs().max().item()
    if name in INVARIANT:
        assert change <= TOLERANCE
    else:
        assert change > 1e-3


@pytest.mark.parametrize("layer", ["published", "full"])
@pytest.mark.parametrize("arch_id", SMALL_ARCHS + ["lstm-2x32-formal"])
def test_dwsnet_changes_under_every_incomplete_permutation(arch_id, layer):
    """Float noise of a correct permutation: below 1e-7. The smallest change under an
    incomplete one (measured at these seeds): published layer 1.4e-5 (lstm-2x32, W_hh of layer 1
    left unpermuted along its columns: the published layer has no self-connection term), full
    layer 1.2e-4."""
    arch = ARCHS[arch_id]()
    encoder = _encoder("dwsnet", arch, layer=layer)
    params = _params(arch, num_models=3)
    sym = arch.symmetry
    perms = sym.random_permutations(3, torch.Generator().manual_seed(3))
    axes = sym.all_axes()
    with torch.no_grad():
        z = encoder(params)
        assert (encoder(sym.apply(params, perms)) - z).abs().max() <= 1e-6
        for left_out in axes:  # e.g. rows of a layer permuted but not the next layer's columns
            incomplete = sym.apply(params, perms, only=[a for a in axes if a != left_out])
            assert (encoder(incomplete) - z).abs().max() > 5e-6, left_out


@pytest.mark.parametrize("layer", ["published", "full"])
@pytest.mark.parametrize("arch_id", ["lstm-2x9", "fake_gru-2x6"])
def test_dwsnet_layers_are_equivariant(arch_id, layer):
    """features(P·θ) = P·features(θ) for the equivariant part, before any pooling; and a wrong
    permutation of the features (another random one) does not match."""
    arch = ARCHS[arch_id]()
    encoder = _encoder("dwsnet", arch, layer=layer)
    params = _params(arch)
    perms = arch.symmetry.random_permutations(6, torch.Generator().manual_seed(4))
    others = arch.symmetry.random_permutations(6, torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = encoder.features(params)
        moved = encoder.features(arch.symmetry.apply(params, perms))
    for p, groups, f, g in zip(encoder.structures, encoder.feature_groups, base, moved):
        wrong = f
        for position, group in enumerate(groups):  # permute f's neuron positions like θ's
            if group in perms:  # hidden groups; fixed axes (published layer) stay
                f = permute_axis(f, perms[group], position)
                wrong = permute_axis(wrong, others[group], position)
        assert (f - g).abs().max() <= TOLERANCE, p.name
        if any(group in perms for group in groups):
            assert (wrong - g).abs().max() > 1e-3, p.name


@pytest.mark.parametrize("arch_id", ["lstm-2x9", "fake_gru-2x6"])
@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_every_encoder_parameter(name, arch_id):
    arch = ARCHS[arch_id]()
    encoder = _encoder(name, arch)
    z = encoder(_params(arch))
    (z * torch.randn(z.shape, generator=torch.Generator().manual_seed(5))).sum().backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ENCODERS)
def test_paper_preset_is_about_the_papers_size(name):
    encoder = _encoder(name, ARCHS["lstm-2x32-formal"](), preset="paper")
    count = sum(p.numel() for p in encoder.parameters())
    assert 0.8e6 <= count <= 1.8e6, count


@pytest.mark.parametrize("name", ENCODERS)
def test_presets_grow_and_unknown_preset_fails(name):
    arch = ARCHS["lstm-2x9"]()
    counts = [sum(p.numel() for p in _encoder(name, arch, preset).parameters()) for preset in PRESETS]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    with pytest.raises(WspaceError, match="valid presets: smoke, quick, paper"):
        _encoder(name, arch, preset="huge")


def test_options_override_preset_fields():
    arch = ARCHS["lstm-2x9"]()
    encoder = _encoder("layerwise_statistics", arch, preset="quick", hidden="256")  # plain data
    assert encoder.config == LayerwiseStatisticsConfig(hidden=256, num_layers=2)
    assert encoder.mlp[0].out_features == 256
    assert _encoder("dwsnet", arch, channels=5).config.channels == 5
    assert DWSNetConfig.for_preset("paper").channels == 48


@pytest.mark.parametrize("name", ENCODERS)
def test_unknown_or_bad_option_fails_with_the_valid_ones(name):
    arch = ARCHS["lstm-1x5"]()
    with pytest.raises(WspaceError, match="unknown option.*'hiden'.*valid options:") as info:
        _encoder(name, arch, hiden=256)
    assert name in str(info.value)
    field = {"dwsnet": "channels", "parameter_transformer": "width"}.get(name, "hidden")
    with pytest.raises(WspaceError, match=f"encoder '{name}': bad option '{field}': expected a positive integer"):
        _encoder(name, arch, **{field: -3})


def test_dwsnet_layer_option():
    arch = ARCHS["lstm-2x9"]()
    assert _encoder("dwsnet", arch).config.layer == "published"
    full = _encoder("dwsnet", arch, layer="full", diagonal=False)
    assert full.config.diagonal is False and full.feature_groups == [p.spatial for p in full.structures]
    with pytest.raises(WspaceError, match="diagonal applies to layer=full only"):
        _encoder("dwsnet", arch, diagonal=False)
    with pytest.raises(WspaceError, match="layer must be one of published, full"):
        _encoder("dwsnet", arch, layer="nope")


def test_input_scale_is_an_option_off_by_default():
    arch = ARCHS["lstm-2x9"]()
    for name in ENCODERS:
        assert _encoder(name, arch).input_scale is None
        scaled = _encoder(name, arch, input_scale="true")
        assert scaled.input_scale is not None
        assert scaled.input_scale.log_scale.shape == (len(arch.layout.params),)


def test_transformer_width_must_divide_into_heads():
    with pytest.raises(WspaceError, match="divisible"):
        _encoder("parameter_transformer", ARCHS["lstm-1x5"](), width=33, num_heads=2)


@pytest.mark.parametrize("name", ENCODERS)
def test_wrong_parameters_fail_clearly(name):
    arch = ARCHS["lstm-1x5"]()
    encoder = _encoder(name, arch)
    params = _params(arch)
    first = arch.layout.names[0]
    with pytest.raises(WspaceError, match="needs parameters"):
        encoder({k: v for k, v in params.items() if k != first})
    with pytest.raises(WspaceError, match="must have shape"):
        encoder({**params, first: params[first][..., :-1]})


def test_structure_is_read_from_the_symmetry_spec():
    lstm, gru = ARCHS["lstm-2x9"](), ARCHS["fake_gru-2x6"]()
    lstm_sets = row_sets(param_structures(lstm.layout, lstm.symmetry))
    assert [(s.group, len(s.params), s.num_rows, s.row_features) for s in lstm_sets] == [
        ("layer0", 4, 4 * 9, 4 + 9 + 2), ("layer1", 4, 4 * 9, 9 + 9 + 2), (None, 2, 2, 9 + 1)]
    gru_sets = row_sets(param_structures(gru.layout, gru.symmetry), merge_blocks=True)
    assert [(s.group, s.num_rows, s.row_features) for s in gru_sets] == [
        ("h0", 6, 3 * (1 + 6 + 5)), ("h1", 6, 3 * (1 + 6 + 6)), (None, 3, 1 + 6)]
    u = param_structures(gru.layout, gru.symmetry)[1]  # cell0.u: (3H, H)
    assert u.spatial == ("h0", "h0") and u.channels == 3
    bad = SymmetrySpec([NeuronGroup("h0", 5, [PermutedAxis("cell0.u", 0, 3)])])
    with pytest.raises(WspaceError, match="does not fit"):
        param_structures(gru.layout, bad)
    with pytest.raises(WspaceError, match="not in the parameter layout"):
        param_structures(gru.layout, SymmetrySpec([NeuronGroup("h0", 6, [PermutedAxis("lstm.x", 0)])]))


@pytest.mark.parametrize("name", ENCODERS)
def test_fits_a_simple_weight_property(name):
    """Encoder + linear head regress the mean of one tensor (chosen by layout position, not
    name) of held-out random networks far better than the best constant."""
    arch = ARCHS["lstm-1x5"]()
    target_name = arch.layout.names[1]
    gen = torch.Generator().manual_seed(6)

    def batch(n):
        params = arch.init(n, gen)
        shift = 0.1 * torch.randn(n, generator=gen)
        params[target_name] = params[target_name] + shift.view(n, *[1] * (params[target_name].ndim - 1))
        return params, params[target_name].flatten(1).mean(1)

    (train, y_train), (test, y_test) = batch(128), batch(128)
    mu, sd = y_train.mean(), y_train.std()
    encoder = _encoder(name, arch, seed=7)
    head = torch.nn.Linear(encoder.context.z_dim, 1)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        loss = (head(encoder(train)).squeeze(1) - (y_train - mu) / sd).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = (head(encoder(test)).squeeze(1) - (y_test - mu) / sd).square().mean().item()
        constant = ((y_test - mu) / sd).square().mean().item()
    assert mse < 0.5 * constant, (mse, constant)
