"""The bundled emulation objectives: known values, masking, float16 targets, gradients."""

import math

import pytest
import torch

from wspace_core import plugins
from wspace_core.objective import Objective

CATEGORICAL = ("reverse_kl", "total_variation", "cross_entropy")


def objective(name: str) -> Objective:
    return plugins.objectives().get(name)()


def as_batch(probs) -> torch.Tensor:
    """A list of distributions -> (M=1, N=1, T, O) tensor."""
    return torch.tensor(probs, dtype=torch.float64)[None, None]


# p: the network, q: the emulator, on two steps of three classes
P = [[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]
Q = [[0.2, 0.2, 0.6], [0.6, 0.2, 0.2]]


def expected(name: str) -> float:
    per_step = []
    for p, q in zip(P, Q):
        if name == "reverse_kl":
            per_step.append(sum(qi * math.log(qi / pi) for pi, qi in zip(p, q)))
        elif name == "forward_kl":
            per_step.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
        elif name == "total_variation":
            per_step.append(0.5 * sum(abs(qi - pi) for pi, qi in zip(p, q)))
        elif name == "cross_entropy":
            per_step.append(-sum(pi * math.log(qi) for pi, qi in zip(p, q)))
    return sum(per_step) / len(per_step)


def test_registered_with_docstrings():
    names = plugins.objectives().names()
    assert set(CATEGORICAL) | {"mse"} <= set(names)
    for name in names:
        assert (plugins.objectives().get(name).__doc__ or "").strip()
    assert plugins.objectives().get("mse").output_kind == "continuous"
    assert all(plugins.objectives().get(n).output_kind == "categorical" for n in CATEGORICAL)


@pytest.mark.parametrize("name", CATEGORICAL)
def test_known_values(name):
    target = as_batch(P).log()
    pred = as_batch(Q).log() + 1.7  # logits: any shift gives the same softmax
    got = objective(name)(pred, target)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected(name), rel=1e-9)


def test_reverse_and_forward_kl_differ():
    reverse = objective("reverse_kl")(as_batch(Q).log(), as_batch(P).log()).item()
    assert reverse == pytest.approx(expected("reverse_kl"))
    assert abs(reverse - expected("forward_kl")) > 0.05


@pytest.mark.parametrize("name", CATEGORICAL)
def test_zero_when_emulator_matches(name):
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(3, 4, 5, 6, generator=g), -1)
    got = objective(name)(logp.clone(), logp.half())  # float16-stored target
    if name == "cross_entropy":  # the entropy of p, not zero
        entropy = -(logp.exp() * logp).sum(-1).mean((1, 2))
        assert torch.allclose(got, entropy, atol=2e-3)
    else:
        assert torch.allclose(got, torch.zeros(3), atol=2e-3)
    assert got.dtype == torch.float32


def test_mse_known_value_and_zero():
    pred = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]]]])  # (1, 1, 2, 2)
    target = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]]]]).half()
    mse = objective("mse")
    assert mse(pred, target).item() == pytest.approx(((1 + 4) / 2 + 4 / 2) / 2)
    assert mse(pred, pred).item() == 0.0


@pytest.mark.parametrize("name", CATEGORICAL + ("mse",))
def test_masking_ignores_masked_steps_per_network(name):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.log_softmax(torch.randn(2, 3, 4, 5, generator=g), -1)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, :, :2] = True
    mask[1, 1, :] = True
    corrupted = target.clone()
    corrupted[~mask] = float("nan")  # whatever is stored after the mask must not matter
    obj = objective(name)
    got = obj(pred, corrupted, mask)
    assert torch.isfinite(got).all()
    ref0 = obj(pred[:1, :, :2], target[:1, :, :2])
    ref1 = obj(pred[1:, 1:2], target[1:, 1:2])
    assert torch.allclose(got, torch.cat([ref0, ref1]), atol=1e-6)


@pytest.mark.parametrize("name", CATEGORICAL)
def test_impossible_tokens_are_safe(name):
    """log p = -inf (or a float16 -65504) for tokens the network never emits: finite loss and
    gradients, and p = 0 contributes nothing where the emulator agrees."""
    p = torch.tensor([0.7, 0.3, 0.0, 0.0])
    target = p.log().half()[None, None, None].clone()  # (1, 1, 1, 4)
    target[..., 3] = -65504.0
    matching = torch.tensor([0.7, 0.3, 1e-30, 1e-30]).log()[None, None, None].requires_grad_()
    loss = objective(name)(matching, target)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(matching.grad).all()
    if name != "cross_entropy":
        assert loss.item() == pytest.approx(0.0, abs=1e-3)
    else:
        assert loss.item() == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)), abs=1e-3)


@pytest.mark.parametrize("name", CATEGORICAL + ("mse",))
def test_gradients_finite_and_training_reduces_loss(name):
    g = torch.Generator().manual_seed(2)
    target = torch.log_softmax(3 * torch.randn(4, 2, 3, 5, generator=g), -1).half()
    pred = torch.zeros(4, 2, 3, 5, requires_grad=True)
    obj = objective(name)
    opt = torch.optim.Adam([pred], lr=0.1)
    first = None
    for _ in range(30):
        loss = obj(pred, target).sum()
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(pred.grad).all()
        first = loss.item() if first is None else first
        opt.step()
    assert obj(pred, target).sum().item() < 0.5 * first or name == "cross_entropy"
    assert obj(pred, target).sum().item() < first
