"""`wspace compare` and its report: bootstrap intervals, the hidden-neuron permutation table on a
real (tiny) zoo, the ordering paragraph computed from numbers, the report figures, and one slow
end-to-end run through the CLI with its MLflow parent and child runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace_core.cli import cli
from wspace_core.compare import (aggregate_runs, encoder_options_for, parse_encoders, parse_seeds,
                                 rebuild_report)
from wspace_core.permutation_table import CORRECT, FUNCTION_ROW, WEIGHTS_ROW, permutation_table
from wspace_core.pretrain import build_encoder, encoder_context
from wspace_core.registry import UnknownNameError, WspaceError
from wspace_core.report import (bootstrap_ci, details_table, downstream_bar_plot, interval_dict, ordering_vs_paper,
                                probe_heatmap)
from wspace_core.zoo import ZooWriter

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one intra-op thread is faster, and immune to a machine shared with other jobs
    (two spinning OpenMP threads on a loaded 2-core machine are many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- bootstrap intervals ----------------------------------------------------------------------

def test_bootstrap_interval_contains_the_mean_and_matches_the_normal_approximation():
    x = np.random.default_rng(0).normal(5.0, 2.0, size=400)
    mean, low, high = bootstrap_ci(x)
    assert mean == pytest.approx(x.mean())
    assert low < mean < high
    half_width = 1.96 * x.std() / math.sqrt(len(x))  # the CLT interval the bootstrap approximates
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)


def test_bootstrap_interval_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (5, 50, 500):
        _, low, high = bootstrap_ci(rng.normal(size=n), seed=3)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_degenerate_cases_and_determinism():
    assert tuple(bootstrap_ci([0.7])) == (0.7, 0.7, 0.7)
    assert tuple(bootstrap_ci([2.0, 2.0, 2.0])) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, float("nan"), 3.0]).mean == 2.0  # NaNs dropped
    values = np.random.default_rng(2).random(12).tolist()
    assert bootstrap_ci(values, n_resamples=500, seed=7) == bootstrap_ci(values, n_resamples=500, seed=7)
    assert bootstrap_ci(values, n_resamples=500, seed=7) != bootstrap_ci(values, n_resamples=500, seed=8)
    low, high = bootstrap_ci(values, n_resamples=2000)[1:]
    assert min(values) <= low <= high <= max(values)
    entry = interval_dict(values)
    assert entry["n"] == 12 and entry["values"] == values and entry["low"] <= entry["mean"] <= entry["high"]


# ---- argument parsing -------------------------------------------------------------------------

def test_parse_seeds_and_encoders():
    assert parse_seeds("3", first=5) == (5, 6, 7)
    assert parse_seeds("0,4,9") == (0, 4, 9)
    with pytest.raises(WspaceError, match="--seeds"):
        parse_seeds("three")
    with pytest.raises(WspaceError, match="at least 1"):
        parse_seeds("0")
    everything = parse_encoders("all")
    assert "no_information" not in everything
    assert {"dwsnet", "layerwise_statistics", "interactive_probing"} <= set(everything)
    assert parse_encoders("dwsnet, layerwise_statistics") == ("dwsnet", "layerwise_statistics")
    with pytest.raises(UnknownNameError, match="registered encoders"):
        parse_encoders("dwsnet,nope")


def test_encoder_options_are_routed_to_the_encoders_that_take_them():
    options = {"probing_strategy": "static", "dwsnet.channels": 4, "z": 1}
    assert encoder_options_for("dwsnet", options) == {"channels": 4, "z": 1}
    assert encoder_options_for("interactive_probing", options) == {"probing_strategy": "static", "z": 1}
    assert encoder_options_for("no_information", options) == {}


# ---- the permutation table on a tiny zoo of real networks -------------------------------------

def tiny_zoo(path, per_split: int = 6, hidden: int = 8, seed: int = 0):
    """LSTMs on formal languages at initialisation (scaled up so that their functions differ), with
    real rollouts and performance: every split populated, one snapshot, written through ZooWriter."""
    task = plugins.task_families().get("formal_languages")(num_eval_strings=16)
    arch = plugins.architectures().get("lstm")(Sizes(task.input_size, hidden, task.output_size))
    generator = torch.Generator().manual_seed(seed)
    tasks = torch.cat([task.sample_tasks(per_split, generator, split=s) for s in ("train", "validation", "ood")])
    M = len(tasks)
    params = {k: 3 * v for k, v in arch.init(M, generator).items()}
    generators = [torch.Generator().manual_seed(1000 * seed + m) for m in range(M)]
    inputs, outputs = task.rollouts(arch, params, tasks, 4, generators)
    metrics = task.evaluate(arch, params, tasks, generators)
    split = [("train", "validation", "ood").index(s) for s in task.split_of(tasks)]
    columns = ["model", "snapshot", "step", "split", *task.task_columns, *task.metric_columns]
    metadata = np.column_stack([np.arange(M), np.zeros(M), np.zeros(M), split, tasks.numpy(),
                                *(metrics[c].numpy() for c in task.metric_columns)])
    base = {"architecture": arch.describe(), "task": task.describe(),
            "build": {"num_models": M, "chunk_size": M, "seed": seed, "device": "cpu"},
            "snapshot_steps": [0], "num_models": M, "metadata_columns": columns}
    with ZooWriter.create(path, base) as writer:
        writer.commit_chunk(0, {"weights": arch.layout.flatten(params), "rollout_inputs": inputs,
                                "rollout_outputs": outputs, "metadata": metadata})
        return writer.finalize()


ENCODERS = ("layerwise_statistics", "flattened_weights", "parameter_transformer", "dwsnet",
            "noninteractive_probing", "interactive_probing")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory.mktemp("compare") / "zoo")


@pytest.fixture(scope="module")
def table(zoo):
    context = encoder_context(zoo, 16, "smoke")
    encoders = {}
    for name in ENCODERS:
        torch.manual_seed(0)
        encoders[name] = build_encoder(name, context)
    return permutation_table(zoo, encoders, num_networks=32, seed=0)


def incomplete(row):
    return [v for k, v in row.items() if k != CORRECT]


def test_table_has_a_column_per_left_out_axis(table):
    # 1-layer LSTM: 4 row blocks (W_ih, W_hh, both biases), W_hh columns, read-out columns
    assert table["columns"][0] == CORRECT and len(table["columns"]) == 1 + 6
    assert table["networks"] == 6 and table["split"] == "validation"
    assert set(table["rows"]) == {FUNCTION_ROW, WEIGHTS_ROW, *ENCODERS}


@pytest.mark.parametrize("row", [FUNCTION_ROW, "dwsnet", "noninteractive_probing", "interactive_probing"])
def test_function_and_equivariant_encoders_ignore_a_correct_permutation_but_not_an_incomplete_one(table, row):
    values = table["rows"][row]
    assert values[CORRECT] < 1e-4
    assert min(incomplete(values)) > 0.02


@pytest.mark.parametrize("row", [WEIGHTS_ROW, "flattened_weights", "parameter_transformer"])
def test_weights_and_unconstrained_encoders_move_under_a_correct_permutation(table, row):
    assert table["rows"][row][CORRECT] > 0.2


def test_layerwise_statistics_ignore_even_incomplete_permutations(table):
    values = table["rows"]["layerwise_statistics"]
    assert max(values.values()) < 1e-4


# ---- the ordering paragraph is computed from the numbers --------------------------------------

def _results(losses: dict[str, float], task_acc: dict[str, float], seeds=(0, 1, 2)) -> dict:
    kinds = {"no_information": "baseline", "dwsnet": "mechanistic", "layerwise_statistics": "mechanistic",
             "interactive_probing": "functionalist", "noninteractive_probing": "functionalist"}
    spread = [-0.001, 0.0, 0.001]

    def entry(v):
        return interval_dict([v + d for d in spread[:len(seeds)]])

    return {
        "objective": "reverse_kl", "task": "formal_languages", "seeds": list(seeds),
        "encoders": list(losses), "kinds": {e: kinds[e] for e in losses},
        "emulation": {e: {"validation": {"reverse_kl": entry(v)}, "ood": {"reverse_kl": entry(v)}}
                      for e, v in losses.items()},
        "downstream": {"task": {"metric": "exact_accuracy", "encoders": {
            e: {"frozen": {"validation": entry(a), "ood": entry(a)}} for e, a in task_acc.items()}}},
    }


def test_ordering_reproducing_the_paper():
    out = ordering_vs_paper(_results(
        {"no_information": 0.9, "dwsnet": 0.5, "layerwise_statistics": 0.6, "interactive_probing": 0.2,
         "noninteractive_probing": 0.3},
        {"dwsnet": 0.3, "layerwise_statistics": 0.2, "interactive_probing": 0.8, "noninteractive_probing": 0.5}))
    facts = out["facts"]
    assert facts["best_task_predictor"]["validation"]["encoder"] == "interactive_probing"
    assert facts["agrees_with_paper_on_task_prediction"] is True
    ahead = facts["probing_ahead_in_emulation_loss"]
    assert ahead["every_probing_ahead_of_every_mechanistic"] and ahead["best_probing"] == "interactive_probing"
    assert facts["beat_baseline"] == ["dwsnet", "layerwise_statistics", "interactive_probing", "noninteractive_probing"]
    assert "**interactive_probing**" in out["text"] and "**yes**" in out["text"] and "this agrees" in out["text"]


def test_ordering_contradicting_the_paper_says_so():
    out = ordering_vs_paper(_results(
        {"no_information": 0.4, "dwsnet": 0.2, "interactive_probing": 0.3, "noninteractive_probing": 0.1},
        {"dwsnet": 0.9, "interactive_probing": 0.1, "noninteractive_probing": 0.1}))
    facts = out["facts"]
    assert facts["best_task_predictor"]["validation"]["encoder"] == "dwsnet"
    assert facts["agrees_with_paper_on_task_prediction"] is False
    assert facts["probing_ahead_in_emulation_loss"]["best_probing_ahead"]
    assert not facts["probing_ahead_in_emulation_loss"]["every_probing_ahead_of_every_mechanistic"]
    assert "**partly**" in out["text"] and "this differs" in out["text"]


def test_ordering_reports_a_tie_instead_of_a_winner():
    out = ordering_vs_paper(_results({"no_information": 0.4, "dwsnet": 0.2, "interactive_probing": 0.3},
                                     {"dwsnet": 0.0, "interactive_probing": 0.0}, seeds=(0,)))
    assert out["facts"]["best_task_predictor"]["validation"]["encoder"] is None
    assert "tie" in out["text"] and "**no**" in out["text"]


def test_the_baseline_is_the_chance_level_never_the_best_task_predictor():
    out = ordering_vs_paper(_results(
        {"no_information": 0.4, "dwsnet": 0.2, "interactive_probing": 0.1},
        {"no_information": 0.9, "dwsnet": 0.3, "interactive_probing": 0.5}))
    facts = out["facts"]
    assert facts["best_task_predictor"]["validation"]["encoder"] == "interactive_probing"
    chance = facts["best_task_predictor_above_chance"]
    assert chance["chance"] == pytest.approx(0.9) and chance["above"] is False
    assert chance["interval_clear_of_chance"] is False
    assert "chance level" in out["text"] and "not above" in out["text"]
    out = ordering_vs_paper(_results(
        {"no_information": 0.4, "dwsnet": 0.2, "interactive_probing": 0.1},
        {"no_information": 0.01, "dwsnet": 0.3, "interactive_probing": 0.5}))
    assert out["facts"]["best_task_predictor_above_chance"] == {
        "chance": pytest.approx(0.01), "above": True, "interval_clear_of_chance": True}


def test_aggregate_keeps_every_head_figure_and_the_report_shows_them(tmp_path):
    def run(enc, seed, acc, supervised=True):
        metrics = {"loss": 1.0, "exact_accuracy": acc, "accuracy_mb": acc + 0.1}
        record = {"encoder": enc, "seed": seed, "kind": "mechanistic",
                  "pretrain": {"metrics": {"validation": {"reverse_kl": 0.1}, "ood": {"reverse_kl": 0.1}}},
                  "downstream_frozen": {"task": {s: metrics for s in ("train", "validation", "ood")}}}
        if supervised:
            record["downstream_supervised"] = {"task": {s: metrics for s in ("train", "validation", "ood")}}
        return record

    records = [run("no_information", s, 0.0, supervised=False) for s in (0, 1)] + \
              [run("dwsnet", s, 0.2 + 0.1 * s) for s in (0, 1)]
    agg = aggregate_runs(records, ["no_information", "dwsnet"], seed=0)
    task = agg["downstream"]["task"]
    assert task["metric"] == "exact_accuracy"
    assert task["encoders"]["dwsnet"]["frozen"]["validation"]["mean"] == pytest.approx(0.25)
    assert set(task["encoders"]["no_information"]) == {"frozen"}
    details = task["details"]["dwsnet"]["supervised"]["ood"]
    assert set(details) == {"accuracy_mb"} and details["accuracy_mb"]["mean"] == pytest.approx(0.35)
    lines = "\n".join(details_table(task))
    assert "accuracy_mb validation" in lines and "| no_information (chance: z carries nothing) | pretrained |" in lines
    assert "| dwsnet | supervised | 0.350" in lines


# ---- report figures -----------------------------------------------------------------------------

def test_probe_heatmap_and_downstream_bars_write_pngs(tmp_path):
    probes = torch.rand(3, 5, 2, 6).softmax(-1).numpy()  # (M, T, P, I)
    path = probe_heatmap(probes, tmp_path / "probes.png", "probes", ["a", "b", "c"])
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="shape"):
        probe_heatmap(probes[0], tmp_path / "bad.png", "bad")
    entries = {"dwsnet": {"frozen": {"validation": interval_dict([0.5, 0.6]), "ood": interval_dict([0.4])},
                          "supervised": {"validation": interval_dict([0.7, 0.8]), "ood": interval_dict([0.6])}},
               "interactive_probing": {"frozen": {"validation": interval_dict([0.9]), "ood": interval_dict([0.8])}}}
    bars = downstream_bar_plot(entries, "exact_accuracy", tmp_path / "bars.png", "task")
    assert bars.read_bytes()[:8] == PNG and bars.stat().st_size > 5000


# ---- interruption ---------------------------------------------------------------------------------

def test_ctrl_c_marks_the_parent_and_the_running_child_killed(zoo, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import wspace_core.compare as compare_module
    from wspace_core.config import resolve
    from wspace_core.tracking import Tracker

    monkeypatch.setattr(compare_module, "ensure_zoo", lambda config, echo, progress=None: zoo)
    real_pretrain, started = compare_module.pretrain, []

    def pretrain(zoo, name, *args, **kwargs):  # Ctrl-C while the second run (the first encoder) trains
        started.append(name)
        if len(started) == 2:
            raise KeyboardInterrupt
        return real_pretrain(zoo, name, *args, **kwargs)

    monkeypatch.setattr(compare_module, "pretrain", pretrain)
    uri = f"sqlite:///{tmp_path / 'interrupt.db'}"
    config = compare_module.CompareConfig(
        run=resolve(preset="smoke", out_dir=str(tmp_path / "runs"), tracking_uri=uri, experiment="ctrl-c"),
        encoders=("layerwise_statistics",), seeds=(0, 1), report_dir=str(tmp_path / "report"))
    tracker = Tracker(uri, "ctrl-c")
    with pytest.raises(KeyboardInterrupt):
        compare_module.compare(config, echo=lambda message: None, tracker=tracker)
    assert started == ["no_information", "layerwise_statistics"]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ctrl-c").experiment_id])
    status = {r.data.tags.get("mlflow.runName"): r.info.status for r in runs}
    assert status == {"compare-lstm-formal_languages": "KILLED", "no_information-seed0": "FINISHED",
                      "layerwise_statistics-seed0": "KILLED"}
    finished = json.loads((tmp_path / "report" / "runs.json").read_text())
    assert [r["encoder"] for r in finished] == ["no_information"]
    assert not (tmp_path / "report" / "report.md").exists()


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_end_to_end(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, [
        "compare", "--preset", "smoke", "--encoders", "layerwise_statistics,interactive_probing",
        "--seeds", "2", "--out", str(out), "--out-dir", str(tmp_path / "runs"), "--experiment", "cmp"])
    assert result.exit_code == 0, result.output + repr(result.exception)

    report = (out / "report.md").read_text()
    for heading in ("## Self-supervised emulation loss (Table 2)", "## Downstream property prediction",
                    "## Emulation fidelity", "## Hidden-neuron permutations", "## Ordering vs the paper",
                    "## Probing inputs", "## Embeddings"):
        assert heading in report
    assert "| no_information | baseline |" in report and "| interactive_probing | functionalist |" in report
    assert "wspace compare --preset smoke --encoders layerwise_statistics,interactive_probing" in report
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    assert len(results["emulation"]["layerwise_statistics"]["validation"]["reverse_kl"]["values"]) == 2
    assert set(results["downstream"]) == {"task", "performance"}
    assert "supervised" in results["downstream"]["task"]["encoders"]["interactive_probing"]
    assert set(results["downstream"]["task"]["encoders"]["no_information"]) == {"frozen"}  # the chance level
    assert "accuracy_mb" in results["downstream"]["task"]["details"]["interactive_probing"]["frozen"]["validation"]
    assert "no_information (chance: z carries nothing)" in report and "Other figures of the same heads" in report
    assert rebuild_report(out)["downstream"] == results["downstream"]  # recomputed from the runs alone
    assert (out / "report.md").read_text() == report
    rebuild_report(out, note="the baseline rows were added afterwards")
    assert "Note: the baseline rows were added afterwards" in (out / "report.md").read_text()
    with pytest.raises(WspaceError, match="no results.json"):
        rebuild_report(tmp_path)
    assert results["permutation"]["rows"][FUNCTION_ROW][CORRECT] < 1e-4
    assert results["permutation"]["rows"]["layerwise_statistics (trained)"][CORRECT] < 1e-4
    for plot in ("downstream_task.png", "probes_interactive_probing.png", "raw_weights_by_task.png",
                 "fidelity_layerwise_statistics.png", "embedding_interactive_probing_by_task.png"):
        assert (out / "plots" / plot).read_bytes()[:8] == PNG

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cmp")
    parent_id = results["mlflow"]["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 3 * 2  # (2 encoders + the baseline) x 2 seeds
    assert sorted((c.data.tags["encoder"], c.data.tags["seed"]) for c in children) == sorted(
        (e, s) for e in ("no_information", "layerwise_statistics", "interactive_probing") for s in ("0", "1"))
    assert all(c.info.status == "FINISHED" for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/report.md", "report/results.json"} <= artifacts
