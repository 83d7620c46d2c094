"""Property heads: losses and metrics on hand-built predictions, target encoding, fitting."""

import numpy as np
import pytest
import torch

from wspace_core import plugins
from wspace_core.heads import encode_targets, head_for
from wspace_core.objective import Head
from wspace_core.registry import WspaceError
from wspace_core.task import PropertySpec

OFFSETS = PropertySpec("task", "multihot", ("ma", "mb", "mc"), groups=(6, 6, 6),
                       values=(-3, -2, -1, 0, 1, 2))
STEP = PropertySpec("training_step", "categorical", ("snapshot",), num_classes=4)
ACCURACY = PropertySpec("accuracy", "scalar", ("performance",))
ROTATION = PropertySpec("rotation", "angle", ("angle",))


def logits_for(classes: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(classes, n).float() * 10 - 5


def test_registered_by_kind():
    registry = plugins.heads()
    for kind in ("multihot", "categorical", "scalar", "angle"):
        assert registry.get(kind).kinds == (kind,)
        assert (registry.get(kind).__doc__ or "").strip()


@pytest.mark.parametrize("spec, width", [(OFFSETS, 18), (STEP, 4), (ACCURACY, None), (ROTATION, 2)])
def test_head_for_and_shapes(spec, width):
    head = head_for(spec, z_dim=7, hidden=16)
    assert spec.kind in head.kinds
    out = head(torch.randn(5, 7))
    assert out.shape == ((5,) if width is None else (5, width))
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.in_features for m in linears] == [7, 16]


def test_head_for_unknown_kind_lists_registered_kinds():
    spec = PropertySpec("odd", "scalar", ("x",))
    object.__setattr__(spec, "kind", "histogram")  # a kind no plugin handles
    with pytest.raises(WspaceError, match="histogram.*angle, categorical, multihot, scalar"):
        head_for(spec, 4)


def test_multihot_encoding_loss_and_metrics():
    columns = {"ma": np.array([-3.0, 2.0, 0.0]), "mb": np.array([1.0, -1.0, -3.0]),
               "mc": np.array([0.0, 0.0, 2.0]), "other": np.zeros(3)}
    target = encode_targets(OFFSETS, columns)
    assert target.dtype == torch.long
    assert target.tolist() == [[0, 4, 3], [5, 2, 3], [3, 0, 5]]
    head = head_for(OFFSETS, 4)
    perfect = torch.cat([logits_for(target[:, g], 6) for g in range(3)], dim=1)  # (3, 18)
    assert head.metrics(perfect, target) == {"exact_accuracy": 1.0, "accuracy_ma": 1.0,
                                             "accuracy_mb": 1.0, "accuracy_mc": 1.0}
    wrong = perfect.clone()
    wrong[0, 6:12] = logits_for(torch.tensor([1]), 6)  # row 0, group mb wrong
    m = head.metrics(wrong, target)
    assert m["exact_accuracy"] == pytest.approx(2 / 3) and m["accuracy_mb"] == pytest.approx(2 / 3)
    assert m["accuracy_ma"] == 1.0
    # BCE over the concatenated one-hots
    onehot = torch.zeros(3, 18)
    onehot[torch.arange(3)[:, None], target + torch.tensor([0, 6, 12])] = 1
    expected = torch.nn.functional.binary_cross_entropy_with_logits(wrong, onehot)
    assert head.loss(wrong, target).item() == pytest.approx(expected.item())
    assert head.loss(perfect, target) < head.loss(wrong, target)


def test_class_encoding_rejects_unknown_values_and_uses_class_offset():
    with pytest.raises(WspaceError, match="column 'ma' holds \\[5.0\\]"):
        encode_targets(OFFSETS, {"ma": np.array([5.0]), "mb": np.zeros(1), "mc": np.zeros(1)})
    with pytest.raises(WspaceError, match="does not have"):
        encode_targets(OFFSETS, {"ma": np.zeros(1)})
    shifted = PropertySpec("task", "multihot", ("a",), groups=(6,), class_offset=3)
    assert encode_targets(shifted, {"a": np.array([-3.0, 2.0])}).tolist() == [[0], [5]]
    assert encode_targets(STEP, {"snapshot": np.array([0.0, 3.0])}).tolist() == [0, 3]
    with pytest.raises(WspaceError):
        encode_targets(STEP, {"snapshot": np.array([4.0])})


def test_categorical_loss_and_accuracy():
    head = head_for(STEP, 4)
    target = encode_targets(STEP, {"snapshot": np.array([0.0, 3.0, 1.0, 1.0])})
    perfect = logits_for(target, 4)
    assert head.metrics(perfect, target) == {"accuracy": 1.0}
    assert head.metrics(logits_for(torch.tensor([0, 3, 2, 2]), 4), target)["accuracy"] == 0.5
    assert head.loss(perfect, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(perfect, target).item())


def test_scalar_metrics_and_calibration():
    head = head_for(ACCURACY, 4)
    target = encode_targets(ACCURACY, {"performance": np.array([0.5, 0.75, 1.0])})
    assert target.dtype == torch.float32
    assert head.metrics(target.clone(), target) == {"mse": 0.0, "mae": 0.0}
    m = head.metrics(target + torch.tensor([0.1, -0.2, 0.3]), target)
    assert m["mae"] == pytest.approx(0.2) and m["mse"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)
    big = torch.tensor([1000.0, 3000.0, 5000.0])
    head.calibrate(big)
    assert head.target_mean.item() == pytest.approx(3000.0)
    assert head.loss(big + 2000.0, big).item() == pytest.approx(1.0)  # one standard deviation off
    with torch.no_grad():  # a zero network predicts the mean, in the target's units
        for p in head.parameters():
            p.zero_()
    assert head(torch.randn(2, 4)).tolist() == [3000.0, 3000.0]


def test_angle_metrics_wrap_around():
    head = head_for(ROTATION, 4)
    target = encode_targets(ROTATION, {"angle": np.array([1.0, 90.0, 180.0, 270.0])})
    perfect = head.encode(target)
    assert head.metrics(perfect, target)["mae_degrees"] == pytest.approx(0.0, abs=1e-4)
    assert head.loss(perfect, target).item() == pytest.approx(0.0, abs=1e-10)
    pred = head.encode(torch.tensor([359.0, 100.0, 170.0, 260.0]))
    assert head.metrics(pred, target)["mae_degrees"] == pytest.approx((2 + 10 + 10 + 10) / 4, abs=1e-4)
    assert head.metrics(head.encode(torch.tensor([1.0])), torch.tensor([359.0]))["mae_degrees"] == \
        pytest.approx(2.0, abs=1e-4)
    assert head.degrees(head.encode(torch.tensor([-90.0]))).item() == pytest.approx(270.0, abs=1e-4)


@pytest.mark.parametrize("spec", [OFFSETS, STEP, ACCURACY, ROTATION], ids=lambda s: s.kind)
def test_head_fits_a_learnable_mapping(spec):
    """Targets that are a simple function of z are learned in a few hundred steps."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(256, 8, generator=g)
    if spec.kind == "multihot":
        cols = {c: (z[:, i] > 0).double().numpy() * 3 - 2 + (z[:, i + 3] > 0).double().numpy()
                for i, c in enumerate(spec.columns)}  # values in {-2, -1, 1, 2}
    elif spec.kind == "categorical":
        cols = {"snapshot": ((z[:, 0] > 0).double() * 2 + (z[:, 1] > 0).double()).numpy()}
    elif spec.kind == "scalar":
        cols = {"performance": (0.7 + 0.1 * z[:, 0]).double().numpy()}
    else:
        cols = {"angle": torch.remainder(torch.rad2deg(torch.atan2(z[:, 1], z[:, 0])), 360).double().numpy()}
    target = encode_targets(spec, cols)
    head = head_for(spec, 8, hidden=64)
    head.calibrate(target)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(200):
        loss = head.loss(head(z), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m = head.metrics(head(z), target)
    if spec.kind == "multihot":
        assert m["exact_accuracy"] > 0.9
    elif spec.kind == "categorical":
        assert m["accuracy"] > 0.95
    elif spec.kind == "scalar":
        assert m["mae"] < 0.02
    else:
        assert m["mae_degrees"] < 10


# ---- a third-party head of a new kind ----------------------------------------------------------

class CountHead(Head):
    """Counts (e.g. of states visited): Poisson regression on log-rates; headline: mean deviance."""

    kinds = ("count",)
    headline_metric = "poisson_deviance"

    def __init__(self, spec, z_dim, hidden=128):
        super().__init__(spec, z_dim, hidden)
        self.net = torch.nn.Linear(z_dim, 1)

    @classmethod
    def encode_targets(cls, spec, columns):
        return torch.from_numpy(np.asarray(columns[spec.columns[0]], dtype=np.float32).round())

    def forward(self, z):
        return self.net(z).squeeze(-1)  # (B,) log-rates

    def loss(self, pred, target):
        return torch.nn.functional.poisson_nll_loss(pred, target)

    def metrics(self, pred, target):
        rate = pred.exp()
        deviance = 2 * (torch.xlogy(target, target / rate) - (target - rate))
        return {"poisson_deviance": deviance.mean().item()}


def test_a_third_party_head_of_a_new_kind_gets_targets_and_a_headline(register_plugin, plugin_namespace):
    from wspace_core.heads import higher_is_better
    from wspace_core.hookspecs import hookimpl
    from wspace.evaluation.downstream import headline

    spec = PropertySpec("visits", "count", ("visits",))
    with pytest.raises(WspaceError, match="'count'"):
        encode_targets(spec, {"visits": np.array([1.0])})

    @hookimpl
    def register_heads(register):
        register("count", CountHead)

    plugin_namespace.register_heads = register_heads
    register_plugin(plugin_namespace, "count_head")
    target = encode_targets(spec, {"visits": np.array([0.0, 2.0, 7.0])})
    assert target.dtype == torch.float32 and target.tolist() == [0.0, 2.0, 7.0]
    head = head_for(spec, 4)
    assert isinstance(head, CountHead)
    metrics = {"loss": 1.5, **head.metrics(head(torch.zeros(3, 4)), target)}
    assert headline(metrics) == ("poisson_deviance", metrics["poisson_deviance"])
    assert higher_is_better("poisson_deviance") is False
    # the bundled heads' headlines, as each declares them
    assert headline({"loss": 0.3, "exact_accuracy": 0.5, "accuracy_ma": 0.9}) == ("exact_accuracy", 0.5)
    assert headline({"loss": 0.3, "mse": 0.1, "mae": 0.2}) == ("mse", 0.1)
    assert headline({"loss": 0.3, "other": 0.1}) == ("loss", 0.3)
    assert higher_is_better("accuracy") and higher_is_better("exact_accuracy") and not higher_is_better("mae_degrees")
