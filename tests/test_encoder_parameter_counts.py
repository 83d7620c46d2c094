"""The six encoders as published: parameter counts at the paper preset against the published
modules, and the published definitions on small cases that can be checked by hand.

The reference counts were measured by building the published modules
(``modules_rnn_encoders.py`` of the paper's code) at the configs of ``training_configs.py``, as
``training_script.define_encoder`` builds them, for the two zoos: formal languages (LSTM 2 x 32,
6 inputs, 6 outputs; probing length 22) and tiled MNIST (LSTM 2 x 32, 16 inputs, 10 outputs;
probing length 50). They count the encoder only: the published ``num_params(rnn_weight_encoder)``,
logged as "num encoder params", excludes the emulator (logged separately). Where the published
module holds parameters that never reach z, wspace leaves them out; ``DEAD`` says how many, and
wspace's count must equal the published count minus those, exactly.
"""

from __future__ import annotations

import pytest
import torch

from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace_core.encoder import BlackBox, EncoderContext

ZOOS = {
    "formal_languages": dict(sizes=Sizes(6, 32, 6, 2), input_kind="onehot", sequence_length=41),
    "tiled_mnist": dict(sizes=Sizes(16, 32, 10, 2), input_kind="continuous", sequence_length=50),
}

#: (encoder, zoo) -> parameters of the published module at the published config. The probing
#: encoders: the interactive_1 / noninteractive_1 configs (P = 1, the paper preset).
PUBLISHED = {
    ("layerwise_statistics", "formal_languages"): 1_248_016,  # ParameterStatisticsEncoder, MLP 768 x 3
    ("layerwise_statistics", "tiled_mnist"): 1_248_016,
    ("flattened_weights", "formal_languages"): 1_797_264,  # FlatParameterEncoder
    ("flattened_weights", "tiled_mnist"): 1_978_000,
    ("parameter_transformer", "formal_languages"): 1_276_688,  # ParameterTransformerEncoder
    ("parameter_transformer", "tiled_mnist"): 1_278_480,
    ("dwsnet", "formal_languages"): 1_279_736,  # NFLSTMParameterEncoder
    ("dwsnet", "tiled_mnist"): 1_282_400,
    ("noninteractive_probing", "formal_languages"): 1_147_030,  # InteractiveEncoder
    ("noninteractive_probing", "tiled_mnist"): 1_156_512,
    ("interactive_probing", "formal_languages"): 1_147_030,
    ("interactive_probing", "tiled_mnist"): 1_156_512,
}

#: the probing encoders with eight probing sequences (the interactive_8 / noninteractive_8 ablations)
PUBLISHED_EIGHT_PROBES = {"formal_languages": 1_388_054, "tiled_mnist": 1_404_704}

#: the figures the paper itself gives (appendix), formal-language zoo
PAPER = {"layerwise_statistics": 1_248_016, "parameter_transformer": 1_276_688}

H, LAYERS = 256, 2
LENGTH = {"formal_languages": 22, "tiled_mnist": 50}


def dead(name: str, zoo: str) -> int:
    """Parameters of the published module that never reach z: the probing encoders' learned
    initial core states h0, c0 (2 x layers x H; the core starts from zeros), their static probe
    vectors (T + 1 of width H) of which the non-interactive encoder reads T and the interactive
    one none (``static_weight=0``)."""
    if not name.endswith("_probing"):
        return 0
    unread_static = LENGTH[zoo] + 1 if name == "interactive_probing" else 1
    return 2 * LAYERS * H + unread_static * H


def context(zoo: str, preset: str = "paper", **options) -> tuple:
    z = ZOOS[zoo]
    s = z["sizes"]
    arch = plugins.architectures().get("lstm")(s)
    ctx = EncoderContext(arch.layout, arch.symmetry, s, s.input_size, s.output_size, z["input_kind"],
                         "categorical", z["sequence_length"], 16, preset, options=options)
    return arch, ctx


def build(name: str, zoo: str, preset: str = "paper", **options):
    arch, ctx = context(zoo, preset, **options)
    torch.manual_seed(0)
    return arch, plugins.encoders().get(name)(ctx)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- parameter counts ------------------------------------------------------------------------

@pytest.mark.parametrize("name, zoo", list(PUBLISHED), ids=[f"{n}-{z}" for n, z in PUBLISHED])
def test_paper_preset_has_the_published_parameter_count(name, zoo):
    _, encoder = build(name, zoo)
    ours, published = count(encoder), PUBLISHED[(name, zoo)]
    assert ours == published - dead(name, zoo)
    if (name, zoo) != ("interactive_probing", "tiled_mnist"):
        assert abs(ours - published) <= 0.01 * published
    else:  # the published module's 14 080 unread parameters (h0, c0 and 51 static probe vectors
        # weighted by 0) are 1.22 % of it: the one case outside 1 %, documented in
        # docs/reproducing-the-paper.md; everything that reaches z is counted exactly above
        assert published - ours == 2 * LAYERS * H + (LENGTH[zoo] + 1) * H == 14_080


@pytest.mark.parametrize("name", list(PAPER))
def test_the_papers_own_figures(name):
    _, encoder = build(name, "formal_languages")
    assert abs(count(encoder) - PAPER[name]) <= 0.01 * PAPER[name]
    assert count(encoder) == PAPER[name]


@pytest.mark.parametrize("zoo", list(ZOOS))
@pytest.mark.parametrize("name", ["noninteractive_probing", "interactive_probing"])
def test_eight_probing_sequences_have_the_published_count(name, zoo):
    _, encoder = build(name, zoo, num_probes=8)
    assert count(encoder) == PUBLISHED_EIGHT_PROBES[zoo] - dead(name, zoo)


# -- the published definitions on small cases ------------------------------------------------

def small(name: str, sizes=Sizes(2, 3, 2, 2), preset="smoke", input_kind="onehot", **options):
    arch = plugins.architectures().get("lstm")(sizes)
    ctx = EncoderContext(arch.layout, arch.symmetry, sizes, sizes.input_size, sizes.output_size,
                         input_kind, "categorical", 10, 4, preset, options=options)
    torch.manual_seed(0)
    return arch, plugins.encoders().get(name)(ctx)


def test_layerwise_statistics_are_mean_unbiased_variance_and_quantiles():
    arch, encoder = small("layerwise_statistics", Sizes(1, 1, 1, 1))
    params = {p.name: torch.zeros(1, *p.shape) for p in arch.layout.params}
    params["lstm.weight_ih_l0"] = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])  # (1, 4, 1)
    features = encoder.statistics(params)  # (1, 6 tensors * 7)
    assert features.shape == (1, 6 * 7)
    expected = [2.5, 5 / 3, 1.0, 1.75, 2.5, 3.25, 4.0]  # mean, var (n - 1), quantiles 0 .. 1
    assert torch.allclose(features[0, :7], torch.tensor(expected))
    assert torch.equal(features[0, 7:14], torch.zeros(7))  # W_hh: all zeros


def test_flattened_weights_read_the_layout_order():
    arch, encoder = small("flattened_weights", hidden=5, num_layers=1)
    assert encoder.mlp[0].in_features == arch.layout.num_params == 4 * 3 * (2 + 3 + 2) + 4 * 3 * (3 + 3 + 2) + 2 * 3 + 2


def test_parameter_transformer_has_one_token_per_weight_row_with_its_bias():
    arch, encoder = small("parameter_transformer", tokens="weight_rows")
    assert [e.in_features for e in encoder.embeddings] == [2 + 1, 3 + 1, 3 + 1, 3 + 1, 3 + 1]
    assert encoder.num_tokens == 4 * 3 * 4 + 2 + 1  # W_ih, W_hh rows of 2 layers, read-out, summary
    params = arch.init(2, torch.Generator().manual_seed(0))
    first, second = encoder.row_sets[0].rows(params), encoder.row_sets[1].rows(params)
    assert torch.equal(first, torch.cat([params["lstm.weight_ih_l0"], params["lstm.bias_ih_l0"][..., None]], -1))
    assert torch.equal(second, torch.cat([params["lstm.weight_hh_l0"], params["lstm.bias_hh_l0"][..., None]], -1))
    _, paper = build("parameter_transformer", "formal_languages")
    assert paper.num_tokens == 519
    layer = paper.transformer.layers[0]
    assert not layer.norm_first and paper.transformer.norm is None  # post-LN
    assert layer.dropout.p == 0.1 and layer.linear1.out_features == 4 * 128


def test_dwsnet_published_terms():
    """Which summaries feed each term (published NPLinearLSTM): for W_hh the published layer
    leaves out the next layer's row means in the column term and the read-out in the row term."""
    _, encoder = build("dwsnet", "formal_languages")
    plan = encoder.plan
    # layout: 0 W_ih0, 1 W_hh0, 2 b_ih0, 3 b_hh0, 4 W_ih1, 5 W_hh1, 6 b_ih1, 7 b_hh1, 8 W_out, 9 b_out
    assert [len(plan.col_term[i]) for i in plan.matrices] == [1, 5, 6, 5, 6]  # published row_in
    assert [len(plan.row_term[i]) for i in plan.matrices] == [6, 4, 6, 3, 2]  # published col_in
    assert [plan.partner[i] for i in plan.vectors] == [0, 1, 4, 5, 8]
    assert plan.row_term[5] == [(5, "colmean"), (7, "self"), (5, "rowmean")]
    assert plan.col_term[5] == [(5, "rowmean"), (4, "colmean"), (5, "colmean"), (6, "self"), (7, "self")]
    assert plan.col_term[8] == [(4, "colmean"), (5, "colmean"), (5, "rowmean"), (6, "self"), (7, "self"),
                                (8, "rowmean")]
    first = encoder.layers[0]
    assert first.pointwise["0"].in_features == 4  # gate blocks as channels
    assert {k: tuple(v.shape) for k, v in first.embeddings.items()} == {
        "0": (1, 6, 4), "8": (6, 1, 4), "9": (6, 4)}  # input and output positions


def test_probing_core_is_residual_and_reads_bos_then_answers_then_eos():
    """With every core weight zero an LSTM cell outputs 0, so the residual core passes its input
    through: z is the z head of the EOS vector, whatever the network."""
    arch, encoder = small("interactive_probing", length=4)
    with torch.no_grad():
        for lstm in encoder.core:
            for p in lstm.parameters():
                p.zero_()
        encoder.eos.copy_(torch.randn(encoder.eos.shape))
        expected = torch.nn.functional.normalize(encoder.to_z(encoder.eos), dim=-1)
        z = encoder(BlackBox(arch, arch.init(3, torch.Generator().manual_seed(1))))
    assert torch.allclose(z, expected.expand(3, -1), atol=1e-6)

    steps = []

    class Counting(BlackBox):
        __slots__ = ()

        def step(self, x, state):
            steps.append(x.shape)
            return super().step(x, state)

    encoder(Counting(arch, arch.init(3, torch.Generator().manual_seed(1))))
    assert steps == [(3, encoder.config.num_probes, 2)] * 4  # T probing steps, P probes each


def test_probing_read_out_and_probe_projections():
    """E_O is sigmoid(Linear) of the concatenated raw answers; each probe has its own slice of
    the projection of the core output, decoded by the shared E_I."""
    _, encoder = small("interactive_probing", num_probes=2, mlp_hidden=3, mlp_layers=1)
    y = torch.randn(5, 2, 2)  # (M, P, O) raw logits
    with torch.no_grad():
        expected = torch.sigmoid(encoder.read_answers(y.reshape(5, 4)))
        assert torch.allclose(encoder._core_input(y), expected)
        probe = encoder.strategy.probe
        summary = torch.randn(5, encoder.config.core_hidden)
        encodings = probe.project(summary).relu().reshape(5, 2, 3)  # (M, P, E): probe p's own slice
        assert torch.allclose(probe(summary), probe.decoder(encodings))
        assert torch.allclose(encoder.strategy(0, summary, None), probe.decoder(encodings).softmax(-1))
    _, log_probs = small("interactive_probing", num_probes=2, answers="log_probs")
    with torch.no_grad():
        assert torch.allclose(log_probs._core_input(y), torch.sigmoid(log_probs.read_answers(
            y.log_softmax(-1).reshape(5, 4))))
