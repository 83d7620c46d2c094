"""The probing encoders (wspace_probing) and probing strategies, including a third-party one."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace_core.encoder import BlackBox, EncoderContext, encode
from wspace_core.registry import UnknownNameError, WspaceError

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENCODERS = ["noninteractive_probing", "interactive_probing"]
M = 6  # networks per test batch


def lstm(sizes: Sizes):
    return plugins.architectures().get("lstm")(sizes)


ONEHOT = Sizes(6, 16, 6, 2)
CONTINUOUS = Sizes(4, 16, 3, 1)


def context(arch, preset="smoke", input_kind="onehot", output_kind="categorical",
            sequence_length=22, z_dim=8, **options) -> EncoderContext:
    return EncoderContext(layout=arch.layout, symmetry=arch.symmetry, sizes=arch.sizes,
                          input_size=arch.sizes.input_size, output_size=arch.sizes.output_size,
                          input_kind=input_kind, output_kind=output_kind,
                          sequence_length=sequence_length, z_dim=z_dim, preset=preset,
                          options=options)


def encoder(name, arch, seed=0, **kwargs):
    torch.manual_seed(seed)
    return plugins.encoders().get(name)(context(arch, **kwargs))


def networks(arch, num=M, seed=1):
    return arch.init(num, generator=torch.Generator().manual_seed(seed))


# -- registration and configuration ----------------------------------------------------------

def test_registered_through_the_public_hooks():
    for name in ENCODERS:
        assert plugins.encoders().owner(name) == "wspace_probing"
    for name in ("static", "interactive"):
        assert plugins.probing_strategies().owner(name) == "wspace_probing"
    assert encoder("noninteractive_probing", lstm(ONEHOT)).config.probing_strategy == "static"
    assert encoder("interactive_probing", lstm(ONEHOT)).config.probing_strategy == "interactive"


@pytest.mark.parametrize("input_kind, length", [("onehot", 22), ("continuous", 50)])
def test_paper_preset(input_kind, length):
    """The published sizes: core 256 x 2, MLPs 128 x 1; T = 22 (formal languages) or 50 (tiled
    MNIST: 49 tiles + 1, training_script.py)."""
    arch = lstm(ONEHOT)
    enc = encoder("noninteractive_probing", arch, preset="paper", input_kind=input_kind,
                  sequence_length=7)
    c = enc.config
    assert (c.core_hidden, c.core_layers, c.mlp_hidden, c.mlp_layers, c.num_probes, c.length) == (
        256, 2, 128, 1, 1, length)
    assert [(lstm.hidden_size, lstm.num_layers) for lstm in enc.core] == [(256, 1), (256, 1)]
    assert enc.strategy.embeddings.shape == (length, 256)  # one static vector per step
    assert enc.strategy.probe.project.out_features == 1 * 128  # one 128-wide encoding per probe


def test_options_override_preset_and_small_presets_follow_the_task_length():
    arch = lstm(ONEHOT)
    assert encoder("noninteractive_probing", arch, preset="quick", sequence_length=12).config.length == 12
    enc = encoder("noninteractive_probing", arch, preset="quick", num_probes=3, length="5",
                  core_layers=2, probing_strategy="interactive")
    c = enc.config
    assert (c.num_probes, c.length, c.core_layers, c.core_hidden) == (3, 5, 2, 64)
    assert c.probing_strategy == "interactive" and enc.strategy.adaptive


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(WspaceError, match="valid options: core_hidden, .*num_probes.*probing_strategy"):
        encoder("interactive_probing", lstm(ONEHOT), num_probe=3)
    with pytest.raises(WspaceError, match="num_probes must be a positive integer"):
        encoder("interactive_probing", lstm(ONEHOT), num_probes=0)
    with pytest.raises(WspaceError, match="answers must be one of raw, log_probs"):
        encoder("interactive_probing", lstm(ONEHOT), answers="logits")
    with pytest.raises(WspaceError, match="presets: paper, quick, smoke"):
        encoder("interactive_probing", lstm(ONEHOT), preset="huge")


def test_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(UnknownNameError, match="registered probing strategies: .*interactive, static"):
        encoder("noninteractive_probing", lstm(ONEHOT), probing_strategy="no_such_strategy")


# -- the black box ---------------------------------------------------------------------------

def _tensors_in(value, depth=0):
    if isinstance(value, torch.Tensor):
        return True
    if depth < 3 and isinstance(value, (tuple, list, set)):
        return any(_tensors_in(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return any(_tensors_in(v, depth + 1) for v in value.values())
    return False


def test_black_box_exposes_no_weights():
    arch = lstm(ONEHOT)
    box = BlackBox(arch, networks(arch))
    assert not hasattr(box, "__dict__")  # __slots__: nothing can be hung on it
    public = [name for name in dir(box) if not name.startswith("_")]
    assert set(public) == {"num_models", "input_size", "output_size", "input_kind", "output_kind",
                           "step", "initial_state"}
    for name in public:
        assert not _tensors_in(getattr(box, name)), name


@pytest.mark.parametrize("name", ENCODERS)
def test_same_function_in_a_different_architecture_gives_the_same_z(name):
    """16 hidden units vs 20, the 4 extra ones cut off (zero outgoing weights): one function,
    two parameter layouts of different sizes. A functionalist encoder cannot tell them apart."""
    small, big = lstm(ONEHOT), lstm(Sizes(6, 20, 6, 2))
    params = networks(small)
    padded = networks(big, seed=7)  # the extra units' incoming weights stay random
    H = 16
    for key, value in params.items():
        target = padded[key]  # (M, rows, cols) or (M, rows)
        if key.startswith("lstm."):  # 4 gate blocks of 20 rows: the first 16 are the original units
            target = target.unflatten(1, (4, 20))[:, :, :H]
            value = value.unflatten(1, (4, H))
        if "weight" in key:  # columns: the original inputs, then the extra units (if any)
            cols = value.shape[-1]
            target[..., :cols] = value
            target[..., cols:] = 0  # nothing reads the extra units
        else:
            target.copy_(value)
    xs = torch.nn.functional.one_hot(torch.randint(0, 6, (M, 3, 9)), 6).float()
    assert torch.allclose(small.forward(params, xs)[0], big.forward(padded, xs)[0], atol=1e-5)

    enc = encoder(name, small, length=10)
    z_small = encode(enc, small, params)
    z_big = encode(enc, big, padded)
    assert (z_small - z_big).abs().max() < 1e-5
    z_other = encode(enc, small, networks(small, seed=99))
    assert (z_small - z_other).norm(dim=-1).min() > 1e-3


# -- the encoders ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("kinds", [("onehot", "categorical"), ("continuous", "continuous")])
def test_shapes_and_unit_norm(name, kinds):
    arch = lstm(ONEHOT if kinds[0] == "onehot" else CONTINUOUS)
    enc = encoder(name, arch, input_kind=kinds[0], output_kind=kinds[1], z_dim=5)
    box = BlackBox(arch, networks(arch), *kinds)
    trace = enc.trace(box)
    c = enc.config
    assert trace.z.shape == (M, 5)
    assert torch.allclose(trace.z.norm(dim=-1), torch.ones(M), atol=1e-5)
    assert trace.probes.shape == (M, c.length, c.num_probes, arch.sizes.input_size)
    assert trace.outputs.shape == (M, c.length, c.num_probes, arch.sizes.output_size)
    if kinds[0] == "onehot":  # distributions over tokens
        assert torch.allclose(trace.probes.sum(-1), torch.ones(()), atol=1e-5)
    assert ((trace.probes >= 0) & (trace.probes <= 1)).all()
    assert torch.equal(enc(box), trace.z)


@pytest.mark.parametrize("name", ENCODERS)
def test_invariant_to_hidden_permutations_and_not_to_incomplete_ones(name):
    arch = lstm(ONEHOT)
    params = networks(arch)
    perms = arch.symmetry.random_permutations(M, generator=torch.Generator().manual_seed(3))
    enc = encoder(name, arch)
    z = encode(enc, arch, params)
    z_perm = encode(enc, arch, arch.symmetry.apply(params, perms))
    assert (z - z_perm).abs().max() < 1e-6  # float noise: ~6e-8
    # leaving out the output side of layer 0 is a different network, so a different z
    incomplete = [(g, a) for g, a in arch.symmetry.all_axes() if not (g == "layer0" and a.axis == 1)]
    z_wrong = encode(enc, arch, arch.symmetry.apply(params, perms, only=incomplete))
    assert (z - z_wrong).norm(dim=-1).min() > 1e-5  # measured 6e-5 .. 2e-3 over seeds
    z_other = encode(enc, arch, networks(arch, seed=2))
    assert (z - z_other).norm(dim=-1).min() > 1e-3


@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_every_encoder_parameter_through_the_black_box(name):
    arch = lstm(ONEHOT)
    enc = encoder(name, arch)
    z = encode(enc, arch, networks(arch))
    (z * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    # the strategy's parameters (probe projections, E_I) reach z only through the answers
    assert any(n.startswith("strategy.probe.") for n, _ in enc.named_parameters())


def test_static_probes_in_one_pass_match_the_step_by_step_loop():
    arch = lstm(ONEHOT)
    enc = encoder("noninteractive_probing", arch, preset="quick", length=7)
    box = BlackBox(arch, networks(arch))
    fast, slow = enc.trace(box), enc.trace(box, stepwise=True)
    assert torch.allclose(fast.probes, slow.probes)
    assert (fast.z - slow.z).abs().max() < 1e-5


def test_interactive_probes_depend_on_the_answers_static_ones_do_not():
    arch = lstm(ONEHOT)
    box = BlackBox(arch, networks(arch))
    static = encoder("noninteractive_probing", arch).trace(box).probes  # (M, T, P, I)
    assert torch.equal(static, static[:1].expand_as(static))
    interactive = encoder("interactive_probing", arch).trace(box).probes
    assert torch.allclose(interactive[:, 0], interactive[:1, 0])  # nothing answered yet at t=0
    spread = (interactive[:, 1:] - interactive[:1, 1:]).abs().flatten(2).amax(-1)  # (M, T-1)
    assert (spread[1:] > 1e-5).all()  # every later step differs between different networks


def test_wrong_black_box_sizes_name_the_fix():
    enc = encoder("interactive_probing", lstm(ONEHOT))
    other = lstm(Sizes(5, 16, 6, 2))
    with pytest.raises(WspaceError, match="black box has 5"):
        encode(enc, other, networks(other))


# -- a third-party strategy through a temporary plugin -----------------------------------------

@pytest.fixture
def self_feedback_plugin(monkeypatch):
    path = ROOT / "examples" / "custom_probing_strategy.py"
    spec = importlib.util.spec_from_file_location("custom_probing_strategy", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "custom_probing_strategy", module)
    spec.loader.exec_module(module)
    plugins.load_plugins()
    plugins.pm.register(module, name="custom_probing_strategy")
    plugins.reset()
    try:
        yield module
    finally:
        if plugins.pm.is_registered(module):
            plugins.pm.unregister(module)
        plugins.reset()


@pytest.mark.parametrize("name", ENCODERS)
def test_custom_strategy_feeds_back_the_most_likely_output(self_feedback_plugin, name):
    assert plugins.probing_strategies().owner("self_feedback") == "custom_probing_strategy"
    arch = lstm(ONEHOT)
    enc = encoder(name, arch, probing_strategy="self_feedback")
    trace = enc.trace(BlackBox(arch, networks(arch)))
    assert torch.allclose(trace.z.norm(dim=-1), torch.ones(M), atol=1e-5)
    expected = torch.nn.functional.one_hot(trace.outputs[:, :-1].argmax(-1), 6).float()
    assert torch.allclose(trace.probes[:, 1:], expected, atol=1e-6)  # straight-through: 1 + s - s
    (trace.z * torch.randn(trace.z.shape)).sum().backward()
    assert enc.strategy.start.grad.abs().sum() > 0  # straight-through: gradients flow


def test_custom_strategy_continuous(self_feedback_plugin):
    arch = lstm(CONTINUOUS)
    enc = encoder("interactive_probing", arch, input_kind="continuous", output_kind="continuous",
                  probing_strategy="self_feedback")
    trace = enc.trace(BlackBox(arch, networks(arch), "continuous", "continuous"))
    assert ((trace.probes >= 0) & (trace.probes <= 1)).all()
    assert trace.probes.shape[-1] == 4
    trace.z.sum().backward()
    assert enc.strategy.feedback.weight.grad.abs().sum() > 0


def test_module_level_registration_helpers(self_feedback_plugin):
    module = self_feedback_plugin
    module.unregister_plugin()
    with pytest.raises(UnknownNameError, match="self_feedback"):
        plugins.probing_strategies().get("self_feedback")
    module.register_plugin()
    assert "self_feedback" in plugins.probing_strategies()
    module.unregister_plugin()
    assert "self_feedback" not in plugins.probing_strategies()
