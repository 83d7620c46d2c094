"""The pretraining learning-rate schedule: constant (published) or cosine, with an optional
linear warm-up; the optimiser runs at the schedule's rate at every step, and a resumed cosine run
equals the straight one."""

from __future__ import annotations

import math

import pytest
import torch

from wspace.config import PretrainConfig
from wspace.training.pretrain import Pretraining, learning_rate, pretrain
from wspace_core.registry import WspaceError

SMALL = dict(steps=8, batch_size=4, eval_every=4, checkpoint_every=4, eval_rollouts=4, emulator_hidden=8,
             emulator_layers=1, rollouts_per_network=2, patience=0, lr=0.01)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from test_compare import tiny_zoo

    torch.set_num_threads(1)
    return tiny_zoo(tmp_path_factory.mktemp("schedule") / "zoo")


def test_the_constant_schedule_is_the_published_one():
    config = PretrainConfig()
    assert (config.lr_schedule, config.warmup_steps) == ("constant", 0)
    assert [learning_rate(config, step) for step in (0, 700, 1499)] == [config.lr] * 3


def test_warm_up_rises_linearly_to_the_rate():
    config = PretrainConfig(lr=0.01, warmup_steps=4)
    assert [learning_rate(config, s) for s in range(6)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_cosine_falls_from_the_rate_to_zero_at_the_last_step():
    config = PretrainConfig(lr=0.01, steps=101, lr_schedule="cosine", warmup_steps=1)
    rates = [learning_rate(config, s) for s in range(101)]
    assert rates[0] == pytest.approx(0.01)  # the one warm-up step
    assert rates[1] == pytest.approx(0.01)  # the cosine's start
    assert rates[51] == pytest.approx(0.005)  # half way
    assert rates[-1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert learning_rate(config, 101) == 0.0
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))


def test_an_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(WspaceError, match="constant, cosine"):
        PretrainConfig(lr_schedule="linear")
    with pytest.raises(WspaceError, match="warmup_steps"):
        PretrainConfig(warmup_steps=-1)


def test_the_optimiser_steps_at_the_scheduled_rate(zoo):
    config = PretrainConfig(**SMALL, lr_schedule="cosine", warmup_steps=2)
    setup = Pretraining.build(zoo, "layerwise_statistics", config, z_dim=4, preset="smoke", seed=3)
    model = setup.model()
    for step in range(config.steps):
        setup.train_step(model, step)
        assert {g["lr"] for g in setup.optimizer.param_groups} == {learning_rate(config, step)}


def test_a_resumed_cosine_run_equals_the_straight_one(zoo, tmp_path):
    config = PretrainConfig(**SMALL, lr_schedule="cosine", warmup_steps=2)
    straight = pretrain(zoo, "layerwise_statistics", config, z_dim=4, preset="smoke", seed=3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(zoo, "layerwise_statistics", config, z_dim=4, preset="smoke", seed=3, checkpoint_dir=tmp_path,
                 progress=lambda p: _interrupt_at(p, 5))
    resumed = pretrain(zoo, "layerwise_statistics", config, z_dim=4, preset="smoke", seed=3, checkpoint_dir=tmp_path,
                       resume=True)
    for a, b in zip(straight.emulator.parameters(), resumed.emulator.parameters()):
        torch.testing.assert_close(a, b)


def _interrupt_at(progress, step):
    if progress.step == step:
        raise KeyboardInterrupt


def test_the_run_command_sets_the_schedule(monkeypatch):
    from click.testing import CliRunner

    from wspace.cli import cli

    captured = {}

    def capture(config, **_):
        captured["config"] = config
        raise KeyboardInterrupt  # the pipeline itself is not run

    monkeypatch.setattr("wspace.experiment.run.run", capture)
    CliRunner().invoke(cli, ["run", "--preset", "smoke", "--lr-schedule", "cosine", "--no-tracking"])
    assert captured["config"].pretrain.lr_schedule == "cosine"
    refused = CliRunner().invoke(cli, ["run", "--preset", "smoke", "--lr-schedule", "linear"])
    assert refused.exit_code != 0 and "constant" in refused.output and "cosine" in refused.output
