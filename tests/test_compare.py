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
from wspace.cli import cli
from wspace.experiment.compare import (aggregate_runs, encoder_options_for, parse_encoders, parse_seeds,
                                 rebuild_report)
from wspace.evaluation.permutation_table import CORRECT, FUNCTION_ROW, WEIGHTS_ROW, permutation_table
from wspace.training.pretrain import build_encoder, encoder_context
from wspace_core.registry import UnknownNameError, WspaceError
from wspace.reporting.claims import ordering_vs_paper
from wspace.reporting.markdown import details_table
from wspace.reporting.plots import downstream_bar_plot, probe_heatmap
from wspace.reporting.statistics import bootstrap_ci, interval_dict
from wspace.zoo import ZooWriter

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


# ---- the paper's claims, tested on the numbers ------------------------------------------------

KINDS = {"no_information": "baseline", "dwsnet": "mechanistic", "layerwise_statistics": "mechanistic",
         "interactive_probing": "functionalist", "noninteractive_probing": "functionalist"}
SPREAD = [-0.001, 0.0, 0.001]


def _results(losses: dict[str, float], task_loss: dict[tuple[str, str], float] | None = None,
             other: dict[str, dict[str, float]] | None = None, task: str = "formal_languages", seeds=(0, 1, 2),
             metric: str = "published_total_variation") -> dict:
    """Results as compare writes them: emulation losses (validation and OOD alike), per-run OOD
    task-prediction losses ((encoder, "frozen"|"supervised") -> loss), and other properties'
    pretrained OOD headline figures (property -> encoder -> value; "performance" is an MSE)."""
    def entry(v):
        return interval_dict([v + d for d in SPREAD[:len(seeds)]])

    runs = []
    for seed_index, seed in enumerate(seeds):
        for enc in losses:
            record = {"encoder": enc, "seed": seed}
            for (e, setting), loss in (task_loss or {}).items():
                if e == enc:
                    value = loss + SPREAD[seed_index]
                    record[f"downstream_{setting}"] = {"task": {"ood": {"loss": value}}}
            runs.append(record)
    downstream = {prop: {"metric": "mse", "encoders": {e: {"frozen": {"validation": entry(v), "ood": entry(v)}}
                                                        for e, v in values.items()}}
                  for prop, values in (other or {}).items()}
    return {
        "objective": "total_variation", "objective_metric": metric, "task": task, "seeds": list(seeds),
        "encoders": list(losses), "kinds": {e: KINDS[e] for e in losses}, "runs": runs,
        "emulation": {e: {"validation": {metric: entry(v)}, "ood": {metric: entry(v)}} for e, v in losses.items()},
        "downstream": downstream,
    }


PAPER_LIKE = {"no_information": 0.9, "dwsnet": 0.5, "layerwise_statistics": 0.6, "interactive_probing": 0.2,
              "noninteractive_probing": 0.3}


def _claim(out, key):
    return next(c for c in out["claims"] if c["claim"] == key)


def test_claims_of_the_paper_hold_on_paper_like_numbers():
    out = ordering_vs_paper(_results(
        PAPER_LIKE,
        task_loss={("interactive_probing", "frozen"): 0.5, ("interactive_probing", "supervised"): 0.8,
                   ("dwsnet", "frozen"): 0.9, ("noninteractive_probing", "frozen"): 0.7,
                   ("no_information", "frozen"): 1.5},
        other={"performance": {"dwsnet": 0.01, "layerwise_statistics": 0.05, "interactive_probing": 0.03}}))
    order = _claim(out, "emulation_order_formal_languages")
    assert order["holds"] is True and order["intervals_separate"] is True
    assert "best mechanistic (dwsnet) 0.5000" in order["detail"]
    task = _claim(out, "ood_task_prediction_interactive_best")
    assert task["holds"] is True and task["intervals_separate"] is True
    assert "next best pretrained noninteractive_probing 0.7000" in task["detail"] and "chance" in task["detail"]
    assert _claim(out, "dwsnet_most_consistent")["holds"] is True
    assert _claim(out, "probing_similar_and_ahead_mnist")["holds"] is None  # a tiled-MNIST claim
    assert out["facts"]["table2_metric"] == "published_total_variation"
    assert out["facts"]["beat_baseline"] == ["dwsnet", "layerwise_statistics", "interactive_probing",
                                             "noninteractive_probing"]
    assert "Here: **holds** (95% intervals apart)" in out["text"] and "does not hold" not in out["text"]


def test_claims_contradicted_by_the_numbers_say_so():
    out = ordering_vs_paper(_results(
        {"no_information": 0.4, "dwsnet": 0.25, "interactive_probing": 0.3, "noninteractive_probing": 0.2},
        task_loss={("interactive_probing", "frozen"): 0.5, ("dwsnet", "supervised"): 0.4},
        other={"performance": {"dwsnet": 0.05, "interactive_probing": 0.01},
               "task": {"dwsnet": 0.0, "interactive_probing": 1.0}}))  # the task is not an "other" property
    assert _claim(out, "emulation_order_formal_languages")["holds"] is False
    task = _claim(out, "ood_task_prediction_interactive_best")
    assert task["holds"] is False and "best supervised dwsnet 0.4000" in task["detail"]
    consistent = _claim(out, "dwsnet_most_consistent")
    assert consistent["holds"] is False and "over 1 property" in consistent["detail"]
    assert out["text"].count("**does not hold**") == 3


def test_one_seed_gives_no_interval_verdict_and_overlap_is_reported():
    out = ordering_vs_paper(_results(PAPER_LIKE, seeds=(0,)))
    order = _claim(out, "emulation_order_formal_languages")
    assert order["holds"] is True and order["intervals_separate"] is None
    close = dict(PAPER_LIKE, noninteractive_probing=0.2005)  # within the ±0.001 spread of interactive
    assert _claim(ordering_vs_paper(_results(close)), "emulation_order_formal_languages")["intervals_separate"] is False


def test_mnist_claim_probing_encoders_similar_and_ahead():
    similar = dict(PAPER_LIKE, noninteractive_probing=0.2005)
    out = ordering_vs_paper(_results(similar, task="tiled_mnist"))
    claim = _claim(out, "probing_similar_and_ahead_mnist")
    assert claim["holds"] is True and claim["intervals_separate"] is True and "overlapping" in claim["detail"]
    assert _claim(out, "emulation_order_formal_languages")["holds"] is None
    assert _claim(out, "ood_task_prediction_interactive_best")["holds"] is None
    apart = ordering_vs_paper(_results(PAPER_LIKE, task="tiled_mnist"))  # 0.2 vs 0.3: not similar
    assert _claim(apart, "probing_similar_and_ahead_mnist")["holds"] is False


def test_claims_use_the_published_metric_when_present():
    results = _results(PAPER_LIKE, metric="published_total_variation")
    flipped = dict(PAPER_LIKE, interactive_probing=0.35)  # by reverse_kl, interactive is behind
    for enc, value in flipped.items():
        for split in ("validation", "ood"):
            results["emulation"][enc][split]["reverse_kl"] = interval_dict([value])
    results["objective_metric"] = "reverse_kl"
    out = ordering_vs_paper(results)
    assert out["facts"]["table2_metric"] == "published_total_variation"
    assert _claim(out, "emulation_order_formal_languages")["holds"] is True
    for enc in results["emulation"]:  # without the published metric, the trained objective's
        for split in ("validation", "ood"):
            del results["emulation"][enc][split]["published_total_variation"]
    out = ordering_vs_paper(results)
    assert out["facts"]["table2_metric"] == "reverse_kl"
    assert _claim(out, "emulation_order_formal_languages")["holds"] is False


def test_dwsnet_tied_for_most_consistent_is_not_most_consistent():
    out = ordering_vs_paper(_results(PAPER_LIKE, other={
        "a": {"dwsnet": 0.01, "layerwise_statistics": 0.05}, "b": {"dwsnet": 0.05, "layerwise_statistics": 0.01}}))
    assert _claim(out, "dwsnet_most_consistent")["holds"] is False


def test_bundled_plugins_declare_the_parts_they_play():
    from wspace.reporting import paper
    from wspace.reporting.roles import encoder_role, paper_zoo, task_property

    assert encoder_role("no_information") == "baseline"
    assert (encoder_role("interactive_probing"), encoder_role("noninteractive_probing")) == paper.PROBING
    assert encoder_role("dwsnet") == paper.DWSNET and encoder_role("not_registered") is None
    assert (paper_zoo("formal_languages"), task_property("formal_languages")) == (paper.FORMAL_LANGUAGES, "task")
    assert (paper_zoo("tiled_mnist"), task_property("tiled_mnist")) == (paper.TILED_MNIST, "rotation")


def test_claims_and_table2_follow_declared_roles_and_paper_zoos_not_names(register_plugin, plugin_namespace):
    from wspace_core.encoder import FunctionalistEncoder
    from wspace_core.hookspecs import hookimpl
    from wspace.reporting.markdown import paper_table2
    from wspace_formal_languages.family import FormalLanguages

    class MyProber(FunctionalistEncoder):
        """A third party's interactive probing encoder."""

        role = "interactive_probing"

    class MyLanguages(FormalLanguages):
        """The formal languages under a name of their own."""

        name = "my_languages"

    @hookimpl
    def register_encoders(register):
        register("my_prober", MyProber)

    @hookimpl
    def register_task_families(register):
        register("my_languages", MyLanguages)

    plugin_namespace.register_encoders = register_encoders
    plugin_namespace.register_task_families = register_task_families
    register_plugin(plugin_namespace, "my_plugin")
    results = _results(PAPER_LIKE, task="my_languages", task_loss={
        ("interactive_probing", "frozen"): 0.5, ("dwsnet", "frozen"): 0.9, ("no_information", "frozen"): 1.5})
    rename = {"interactive_probing": "my_prober"}
    results["encoders"] = [rename.get(e, e) for e in results["encoders"]]
    results["kinds"] = {rename.get(e, e): k for e, k in results["kinds"].items()}
    results["emulation"] = {rename.get(e, e): v for e, v in results["emulation"].items()}
    for record in results["runs"]:
        record["encoder"] = rename.get(record["encoder"], record["encoder"])
    out = ordering_vs_paper(results)
    assert _claim(out, "emulation_order_formal_languages")["holds"] is True
    task = _claim(out, "ood_task_prediction_interactive_best")
    assert task["holds"] is True and "pretrained my_prober 0.5000" in task["detail"]
    row = next(line for line in paper_table2(results) if line.startswith("| my_prober |"))
    assert "| 0.015 |" in row


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

    import wspace.experiment.compare as compare_module
    from wspace.config import resolve
    from wspace.tracking import Tracker

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
        encoders=("layerwise_statistics",), seeds=(0, 1), report_dir=str(tmp_path / "report"),
        workers=1)  # in this process, where the patched pretraining runs (tests/test_compare_workers.py: workers)
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
    # the published code's metric, declared by the objective, beside the paper's figure in Table 2
    assert results["objective_metric"] == "published_total_variation"
    assert results["metric_info"]["published_total_variation"]["published"] is True
    assert len(results["emulation"]["interactive_probing"]["ood"]["published_total_variation"]["values"]) == 2
    assert "| paper validation |" in report and {c["claim"] for c in results["ordering"]["claims"]} == {
        "emulation_order_formal_languages", "probing_similar_and_ahead_mnist",
        "ood_task_prediction_interactive_best", "dwsnet_most_consistent"}
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
