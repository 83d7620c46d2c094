"""The paper's published experiment as wspace's default (issue #10, sections 2 and 5): the published
objective and metric pinned on hand-checkable cases, the metrics pretraining reports, gradient
clipping per module, the paper preset's budget, and the paper's seeds."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from wspace_core import plugins
from wspace.config import PretrainConfig, resolve
from wspace.presets import PRETRAIN_PRESETS
from wspace_core.objective import EmulationMetric, emulation_metrics, objective_metric_name
from wspace.training.pretrain import ZooSplit, clip_groups, embed, emulate, metric_objectives, pretrain, training_step
from wspace_core.registry import WspaceError

# p: the network, q: the emulator; two steps (T = 2) of three classes
P = [[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]
Q = [[0.2, 0.2, 0.6], [0.6, 0.2, 0.2]]
# total variation ½Σ|q−p|: step 0: ½(0.3 + 0.1 + 0.4) = 0.4; step 1: ½(0.3 + 0.15 + 0.15) = 0.3
TV_STEPS = (0.4, 0.3)
# KL(q‖p) = Σ q log(q/p): step 0: 0.2 ln 0.4 + 0.2 ln(2/3) + 0.6 ln 3 = 0.394816;
# step 1: 0.6 ln(2/3) + 2 · 0.2 ln 4 = 0.311239
KL_STEPS = (0.2 * math.log(0.4) + 0.2 * math.log(2 / 3) + 0.6 * math.log(3),
            0.6 * math.log(2 / 3) + 0.4 * math.log(4))


def objective(name: str):
    return plugins.objectives().get(name)()


def batch(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64)[None, None]  # (M=1, N=1, T, O)


def test_hand_figures():
    assert KL_STEPS[0] == pytest.approx(0.394816, abs=1e-6) and KL_STEPS[1] == pytest.approx(0.311239, abs=1e-6)


def test_published_total_variation_averages_every_position():
    tv = objective("total_variation")
    pred, target = batch(Q).log() + 0.3, batch(P).log()
    assert tv(pred, target).item() == pytest.approx(0.35, abs=1e-12)  # (0.4 + 0.3) / 2: nothing masked
    only_first = torch.tensor([[[True, False]]])
    assert tv(pred, target, only_first).item() == pytest.approx(0.4, abs=1e-12)  # wspace's masked option


def test_published_reverse_kl_averages_over_the_classes():
    pred, target = batch(Q).log(), batch(P).log()
    class_mean = objective("reverse_kl_class_mean")(pred, target).item()
    assert class_mean == pytest.approx((KL_STEPS[0] / 3 + KL_STEPS[1] / 3) / 2, rel=1e-9)  # 0.117676
    assert class_mean == pytest.approx(0.117676, abs=1e-6)
    summed = objective("reverse_kl")(pred, target).item()  # wspace: summed over the classes
    assert summed == pytest.approx(3 * class_mean, rel=1e-9)


def test_published_reduction_over_rollouts_and_networks():
    """Two networks, two rollouts each: per network the mean over rollouts and positions."""
    target = batch(P).log().expand(2, 2, 2, 3).clone()
    pred = batch(Q).log().expand(2, 2, 2, 3).clone()
    pred[1, 1] = target[1, 1]  # network 1's second rollout emulated exactly: TV 0 at both steps
    got = objective("total_variation")(pred, target)
    assert got.tolist() == pytest.approx([0.35, (0.4 + 0.3 + 0 + 0) / 4])


def test_pretraining_defaults_are_the_published_ones():
    config = PretrainConfig()
    assert (config.objective, config.loss_positions, config.grad_clip, config.grad_clip_scope,
            config.rollouts_per_network, config.batch_size, config.weight_decay) == (
        "total_variation", "all", 0.1, "per_module", 1, 64, 0.01)
    paper = resolve(preset="paper").pretrain
    assert (paper.steps, paper.lr, paper.patience, paper.eval_every, paper.rollouts_per_network,
            paper.emulator_hidden, paper.emulator_layers) == (100_000, 1e-4, 0, 1000, 1, 256, 2)
    assert PRETRAIN_PRESETS["paper"]["patience"] == 0  # no early stopping: the best validation state is kept
    with pytest.raises(WspaceError, match="loss_positions"):
        PretrainConfig(loss_positions="eos")
    with pytest.raises(WspaceError, match="grad_clip_scope"):
        PretrainConfig(grad_clip_scope="encoder")
    with pytest.raises(WspaceError, match="patience"):
        PretrainConfig(patience=-1)


def test_reported_metrics_are_declared_by_the_objective():
    names = list(metric_objectives(PretrainConfig()))
    assert names == ["published_total_variation", "published_reverse_kl", "reverse_kl", "total_variation"]
    wspace_choice = metric_objectives(PretrainConfig(objective="reverse_kl", loss_positions="masked"))
    assert list(wspace_choice)[0] == "reverse_kl" and "published_total_variation" in wspace_choice
    assert list(metric_objectives(PretrainConfig(objective="cross_entropy")))[0] == "cross_entropy_all_steps"
    published = [m for m in plugins.objectives().get("total_variation").report_metrics if m.published]
    assert {(m.objective, m.positions) for m in published} == {("total_variation", "all"),
                                                               ("reverse_kl_class_mean", "all")}
    assert objective_metric_name("mse", "masked") == "mse"

    class Custom(nn.Module):  # a third-party objective that declares nothing: its own name
        report_metrics = ()
    assert [m.name for m in emulation_metrics(Custom, "custom", "all")] == ["custom_all_steps"]
    with pytest.raises(WspaceError, match="positions"):
        EmulationMetric("x", "total_variation", "some")


def test_published_metrics_ignore_the_mask():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 4, 6, generator=g)
    target = torch.log_softmax(torch.randn(2, 3, 4, 6, generator=g), -1)
    mask = torch.rand(2, 3, 4, generator=g) > 0.5
    metrics = metric_objectives(PretrainConfig())
    tv = objective("total_variation")
    assert torch.allclose(metrics["published_total_variation"](pred, target, mask), tv(pred, target))
    assert torch.allclose(metrics["total_variation"](pred, target, mask), tv(pred, target, mask))


# ---- on a real tiny zoo ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from test_compare import tiny_zoo

    torch.set_num_threads(1)
    return tiny_zoo(tmp_path_factory.mktemp("published") / "zoo")


SMALL = dict(steps=2, batch_size=4, eval_every=1, checkpoint_every=1, eval_rollouts=4, emulator_hidden=8,
             emulator_layers=1)


def test_pretraining_reports_the_published_metric_computed_by_hand(zoo):
    result = pretrain(zoo, "layerwise_statistics", PretrainConfig(**SMALL), z_dim=4, preset="smoke", seed=0)
    assert result.objective_metric == "published_total_variation"
    assert result.metric_info["published_total_variation"]["published"] is True
    split = ZooSplit(zoo, "validation", torch.device("cpu"))
    params, inputs, targets, mask = split.batch(split.rows, None, 4)
    result.encoder.eval(), result.emulator.eval()
    with torch.no_grad():
        pred = emulate(result.emulator, embed(result.encoder, split, params), inputs)  # (M, N, T, O)
    log_q, log_p = torch.log_softmax(pred, -1), torch.log_softmax(targets.clamp_min(-80), -1)
    tv = 0.5 * (log_q.exp() - log_p.exp()).abs().sum(-1)  # (M, N, T)
    kl_class_mean = (log_q.exp() * (log_q - log_p)).mean(-1)
    assert not mask.all()  # some rollouts emit EOS early: "all" and "masked" differ
    got = result.metrics["validation"]
    assert got["published_total_variation"] == pytest.approx(tv.mean().item(), rel=1e-5)
    assert got["published_reverse_kl"] == pytest.approx(kl_class_mean.mean().item(), rel=1e-5)
    per_network = (tv * mask).sum((1, 2)) / mask.sum((1, 2))
    assert got["total_variation"] == pytest.approx(per_network.mean().item(), rel=1e-5)
    assert got["total_variation"] != pytest.approx(got["published_total_variation"], rel=1e-3)


def test_patience_zero_never_stops_early(zoo):
    config = PretrainConfig(**{**SMALL, "steps": 6, "lr": 0.5, "patience": 0})
    result = pretrain(zoo, "layerwise_statistics", config, z_dim=4, preset="smoke", seed=0)
    assert result.steps_done == 6 and not result.stopped_early
    assert [h["step"] for h in result.history] == list(range(7))  # evaluated at 0..6, best kept


@pytest.mark.parametrize("scope", ["per_module", "joint"])
def test_gradients_are_clipped_per_module_as_published(zoo, scope):
    from wspace.training.emulation import Emulator
    from wspace.training.pretrain import EmulationModel, build_encoder, encoder_context

    torch.manual_seed(0)
    train = ZooSplit(zoo, "train", torch.device("cpu"))
    encoder = build_encoder("layerwise_statistics", encoder_context(zoo, 4, "smoke"))
    emulator = Emulator(train.task.input_size, train.task.output_size, 4, 8, 1)
    groups = clip_groups(encoder, emulator, scope)
    assert len(groups) == (2 if scope == "per_module" else 1)
    optimizer = torch.optim.SGD([p for g in groups for p in g], lr=0.0)  # keeps the clipped gradients
    clip = 1e-4  # below either module's gradient norm (encoder ~1e-3, emulator ~0.08 here)
    training_step(EmulationModel(encoder, emulator, train), objective("total_variation"), optimizer, groups,
                  train, 4, 1, clip, torch.Generator().manual_seed(0))

    def norm(module):
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()])).item()

    if scope == "per_module":  # each module's gradient norm clipped to the limit on its own
        assert norm(encoder) == pytest.approx(clip, rel=1e-2) and norm(emulator) == pytest.approx(clip, rel=1e-2)
    else:  # one vector: together at the limit, so each module below it
        assert math.hypot(norm(encoder), norm(emulator)) == pytest.approx(clip, rel=1e-2)
        assert norm(encoder) < clip and norm(emulator) < clip


# ---- the paper's seeds --------------------------------------------------------------------------------

def test_compare_defaults_to_the_papers_15_seeds_at_the_paper_preset(monkeypatch, tmp_path):
    import wspace.experiment.compare as compare_module

    from wspace.cli import cli

    seen, configs = [], []

    def record_and_stop(config, **kwargs):  # the seeds the CLI chose; no training
        seen.append(config.seeds)
        configs.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "compare", record_and_stop)

    for preset, expected in (("paper", tuple(range(15))), ("quick", (0, 1, 2)), ("smoke", (0, 1, 2))):
        result = CliRunner().invoke(cli, ["compare", "--preset", preset, "--encoders", "dwsnet", "--no-tracking",
                                          "--out-dir", str(tmp_path)])
        assert result.exit_code == 130, result.output
        assert seen[-1] == expected
    CliRunner().invoke(cli, ["compare", "--preset", "paper", "--seeds", "2", "--encoders", "dwsnet",
                             "--no-tracking", "--out-dir", str(tmp_path)])
    assert seen[-1] == (0, 1)
    assert configs[-1].run.pretrain.loss_positions == "all" and configs[-1].run.pretrain.rollouts_per_network == 1


def test_wspace_options_are_named_flags(monkeypatch, tmp_path):
    """wspace's own choices stay reachable: masked positions, reverse KL, 16 rollouts per network."""
    import wspace.experiment.compare as compare_module
    from wspace.cli import cli

    configs = []

    def record_and_stop(config, **kwargs):
        configs.append(config.run.pretrain)
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "compare", record_and_stop)
    result = CliRunner().invoke(cli, ["compare", "--preset", "smoke", "--encoders", "dwsnet", "--no-tracking",
                                      "--objective", "reverse_kl", "--loss-positions", "masked",
                                      "--rollouts-per-network", "16", "--out-dir", str(tmp_path)])
    assert result.exit_code == 130, result.output
    assert (configs[-1].objective, configs[-1].loss_positions, configs[-1].rollouts_per_network) == (
        "reverse_kl", "masked", 16)


# ---- Table 2 in the paper's form ----------------------------------------------------------------------

def test_table2_prints_the_papers_figure_beside_the_published_metric_only():
    from wspace.reporting import paper
    from wspace.reporting.markdown import paper_table2
    from wspace.reporting.statistics import interval_dict

    def results(metric):
        return {"task": "formal_languages", "objective": "total_variation", "objective_metric": metric,
                "encoders": ["no_information", "interactive_probing"],
                "kinds": {"interactive_probing": "functionalist"},
                "emulation": {e: {s: {metric: interval_dict([v])} for s in ("validation", "ood")}
                              for e, v in (("no_information", 0.2), ("interactive_probing", 0.1))}}

    assert paper.TABLE_2[("formal_languages", "interactive_probing", "validation")] == 0.015
    lines = paper_table2(results("published_total_variation"))
    assert lines[0] == ("| encoder | kind | validation published_total_variation | paper validation | "
                        "ood published_total_variation | paper ood |")
    assert lines[3] == "| interactive_probing | functionalist | 0.1000 | 0.015 | 0.1000 | – |"
    assert lines[2] == "| no_information | baseline | 0.2000 | – | 0.2000 | – |"
    other = paper_table2(results("reverse_kl"))  # another metric: the paper's figures are not comparable
    assert "paper" not in other[0] and "0.015" not in "\n".join(other)


def test_a_run_stored_before_the_published_defaults_resumes_with_its_own_choices(tmp_path):
    import json

    import attrs

    from wspace.experiment.run import load_run_config

    stored = attrs.asdict(resolve(preset="smoke"))
    for key in ("loss_positions", "grad_clip_scope"):  # what an earlier wspace wrote
        del stored["pretrain"][key]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    pretrain_config = load_run_config(tmp_path).pretrain
    assert (pretrain_config.loss_positions, pretrain_config.grad_clip_scope) == ("masked", "joint")
    (tmp_path / "config.json").write_text(json.dumps(attrs.asdict(resolve(preset="smoke"))))
    assert load_run_config(tmp_path).pretrain.loss_positions == "all"  # a current one keeps its own
