"""Pretraining as a set-up object and a loop with collaborators: the benchmark's step is the
loop's step, a resumed or interrupted run continues exactly, the best state and early stopping,
metric names from the objective's declaration, and the DDP share in one process."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from wspace.config import PretrainConfig
from wspace.training import distributed
from wspace.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from wspace.training.distributed import DistContext, RankShare
from wspace.training.loop import TRAIN_LOSS, BestState, LoopState
from wspace.training.pretrain import EVAL_SPLITS, Pretraining, pretrain
from wspace_core.hookspecs import hookimpl
from wspace_core.objective import EmulationMetric
from wspace_core.registry import WspaceError

SMALL = dict(steps=8, batch_size=4, eval_every=3, checkpoint_every=5, eval_rollouts=4, emulator_hidden=8,
             emulator_layers=1, rollouts_per_network=2, patience=0)
ENCODERS = ("layerwise_statistics", "flattened_weights")  # the second permutes its input (augmentation)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from test_compare import tiny_zoo

    torch.set_num_threads(1)
    return tiny_zoo(tmp_path_factory.mktemp("loop") / "zoo")


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        h.update(name.encode()), h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def run(zoo, encoder, **kwargs):
    losses = []
    config = PretrainConfig(**{**SMALL, **kwargs.pop("config", {})})
    result = pretrain(zoo, encoder, config, z_dim=4, preset="smoke", seed=3,
                      progress=lambda p: losses.append(p.loss), **kwargs)
    return result, losses


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_benchmarks_step_is_the_loops_step(zoo, encoder):
    _, losses = run(zoo, encoder)
    setup = Pretraining.build(zoo, encoder, PretrainConfig(**SMALL), z_dim=4, preset="smoke", seed=3)
    model = setup.model()
    assert [setup.train_step(model).item() for _ in losses] == losses  # the evaluations draw nothing


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_resumed_run_equals_the_straight_one(zoo, encoder, tmp_path):
    straight, straight_losses = run(zoo, encoder)
    _, first = run(zoo, encoder, checkpoint_dir=tmp_path, config={"steps": 6})  # evaluated at 6 either way
    resumed, second = run(zoo, encoder, checkpoint_dir=tmp_path, resume=True)
    assert first + second == straight_losses
    assert resumed.history == straight.history and resumed.metrics == straight.metrics
    assert (resumed.best_step, resumed.steps_done) == (straight.best_step, straight.steps_done)
    assert digest(resumed.encoder) == digest(straight.encoder) and digest(resumed.emulator) == digest(straight.emulator)


def test_ctrl_c_checkpoints_and_the_run_continues_exactly(zoo, tmp_path):
    straight, straight_losses = run(zoo, "flattened_weights")

    def interrupt(progress):
        if progress.step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(zoo, "flattened_weights", PretrainConfig(**SMALL), z_dim=4, preset="smoke", seed=3,
                 checkpoint_dir=tmp_path, progress=interrupt)
    state = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert state["step"] == 6 and "rng_ranks" not in state  # one process: no per-rank samplers
    resumed, losses = run(zoo, "flattened_weights", checkpoint_dir=tmp_path, resume=True)
    assert losses == straight_losses[6:] and resumed.history == straight.history
    assert digest(resumed.encoder) == digest(straight.encoder)


def test_metric_names_come_from_the_objectives_declaration(zoo, register_plugin, plugin_namespace):
    from wspace_objectives.losses import TotalVariation

    class Declared(TotalVariation):
        report_metrics = (EmulationMetric("mean_tv_everywhere", "total_variation", "all"),
                          EmulationMetric("tv_until_eos", "total_variation", "masked"))

    @hookimpl
    def register_objectives(register):
        register("declared_tv", Declared)

    plugin_namespace.register_objectives = register_objectives
    register_plugin(plugin_namespace, "declared-objective")
    logged = []
    result, _ = run(zoo, "layerwise_statistics", config={"objective": "declared_tv", "steps": 10},
                    log_metrics=lambda metrics, step: logged.append((step, sorted(metrics))))
    names = ("declared_tv_all_steps", "mean_tv_everywhere", "tv_until_eos")  # the trained objective's first
    assert result.objective_metric == names[0] and list(result.metric_info) == list(names)
    evaluated = sorted(f"{split}/{name}" for split in EVAL_SPLITS for name in names)
    assert logged == [(0, evaluated), (3, evaluated), (6, evaluated), (9, evaluated),
                      (10, sorted([TRAIN_LOSS])), (10, evaluated)]
    assert all(set(h) == {"step", *evaluated} for h in result.history)
    validation = result.history[-1]
    assert validation["validation/mean_tv_everywhere"] == validation["validation/declared_tv_all_steps"]


def test_best_state_and_patience():
    best = BestState(patience=2)
    copies = iter(range(10))

    def weights():
        return {"copy": next(copies)}

    best.offer(0.5, 0, {"m": 0.5}, weights)
    best.offer(0.4, 3, {"m": 0.4}, weights)
    assert (best.loss, best.step, best.weights, best.stale_evals) == (0.4, 3, {"copy": 1}, 0)
    best.offer(0.4, 6, {"m": 0.4}, weights)  # no improvement: the earlier state stays
    assert (best.step, best.stale_evals, best.patience_spent) == (3, 1, False)
    best.offer(0.9, 9, {"m": 0.9}, weights)
    assert best.patience_spent and best.weights == {"copy": 1}
    never = BestState(patience=0, stale_evals=100)
    assert not never.patience_spent


def test_loop_state_round_trips_through_checkpoint_fields():
    state = LoopState(BestState(3, 0.2, 4, {"validation": {"m": 0.2}}, {"encoder": {}}, 1), 7, [{"step": 0}])
    fields = state.checkpoint_fields()
    assert list(fields) == ["step", "history", "stale_evals", "best_loss", "best_step", "best_metrics", "best_state"]
    assert LoopState.from_checkpoint(fields, patience=3) == state


def test_early_stopping_stops_and_keeps_the_best(zoo):
    result, losses = run(zoo, "layerwise_statistics", config={"lr": 0.5, "patience": 1, "eval_every": 1,
                                                              "steps": 30})
    assert result.stopped_early and result.steps_done == len(losses) < 30
    validation = [h[f"validation/{result.objective_metric}"] for h in result.history]
    best = validation.index(min(validation))
    assert len(validation) - 1 - best == 1  # stopped at the first evaluation without improvement
    assert (result.best_step, result.best_validation) == (result.history[best]["step"], validation[best])
    assert result.metrics["ood"] == {k.split("/", 1)[1]: v for k, v in result.history[best].items()
                                     if k.startswith("ood/")}


def test_rank_share_in_one_process_is_the_identity():
    share = RankShare.of(DistContext(), 6)
    rows = np.arange(10)
    assert share.local_batch == 6 and share.loss_scale == 1.0 and share.sampler_seed(7) == 7
    assert share.rows(rows) is rows and share.gather({"a": 1}) is None and share.agree(3) == 3
    assert share.mean({"a": 0.1, "b": 3.0}, 3) == {"a": 0.1 / 3, "b": 3.0 / 3}
    loss = torch.tensor(0.1234567)
    assert share.batch_loss(loss, reported=False) == loss.item()  # every step: the finite-loss check
    module = torch.nn.Linear(2, 2)
    assert share.wrap(module, torch.device("cpu"), lambda: None) is module


def test_rank_share_splits_batch_and_rows_over_ranks():
    shares = [RankShare.of(DistContext(rank, 3), 10) for rank in range(3)]
    assert [s.local_batch for s in shares] == [4, 3, 3]
    per_network = torch.arange(10, dtype=torch.float64) ** 2  # one batch's losses, dealt out in rank order
    means = [chunk.mean() for chunk in per_network.split([s.local_batch for s in shares])]
    ddp_average = sum(s.loss_scale * m for s, m in zip(shares, means)) / 3  # what DDP's gradient averaging sees
    assert ddp_average.item() == pytest.approx(per_network.mean().item())
    assert [s.sampler_seed(5) for s in shares] == [distributed.rank_seed(5, r) for r in range(3)]
    rows = np.arange(8)
    assert np.array_equal(np.concatenate([s.rows(rows) for s in shares]), rows)
    assert [len(s.rows(rows)) for s in shares] == [3, 3, 2]


def test_resume_needs_a_checkpoint_directory(zoo):
    from wspace_core.registry import WspaceError

    with pytest.raises(WspaceError, match="checkpoint directory"):
        run(zoo, "layerwise_statistics", resume=True)


def test_the_best_state_is_chosen_on_the_selection_metric(zoo):
    config = dict(objective="cross_entropy", selection_metric="published_total_variation", steps=9, eval_every=1)
    result, _ = run(zoo, "layerwise_statistics", config=config)
    history = [(h["validation/published_total_variation"], h["step"]) for h in result.history]
    assert (result.best_validation, result.best_step) == min(history)
    assert (result.selection_metric, result.objective_metric) == ("published_total_variation", "cross_entropy_all_steps")
    trained = [(h["validation/cross_entropy_all_steps"], h["step"]) for h in result.history]
    plain, _ = run(zoo, "layerwise_statistics", config={**config, "selection_metric": "objective"})
    assert (plain.best_validation, plain.best_step) == min(trained)  # the trained objective's, by default
    assert plain.selection_metric == "cross_entropy_all_steps"


def test_an_unknown_selection_metric_is_refused_with_the_choices(zoo):
    with pytest.raises(WspaceError, match="selection_metric 'accuracy'.*published_total_variation"):
        run(zoo, "layerwise_statistics", config=dict(objective="cross_entropy", selection_metric="accuracy"))
