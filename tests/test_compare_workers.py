"""`wspace compare` training its child runs in worker processes (`CompareConfig.workers`, the
CLI's --workers): the same figures as one after another in this process, every child run in
MLflow with the metrics it logged, and a worker's error or Ctrl-C leaving no process behind."""

from __future__ import annotations

import json
import math
import multiprocessing as mp

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import wspace.experiment.compare as compare_module
import wspace.workers as workers_module
from test_compare import tiny_zoo
from wspace.cli import cli
from wspace.config import resolve
from wspace.experiment.compare import CompareConfig, compare
from wspace.workers import default_workers
from wspace.tracking import Tracker
from wspace_core.registry import WspaceError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory.mktemp("workers") / "zoo")


@pytest.fixture
def one_thread():
    """The runs in this process single-threaded too, as every worker is: the sums then add up in
    the same order in both, so the figures agree to the last bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(tmp_path, name: str, workers: int | None, **run) -> CompareConfig:
    return CompareConfig(
        run=resolve(preset="smoke", out_dir=str(tmp_path / name / "runs"), experiment=name,
                    tracking_uri=f"sqlite:///{tmp_path / name / 'mlflow.db'}", **run),
        encoders=("layerwise_statistics", "interactive_probing"), seeds=(0, 1),
        report_dir=str(tmp_path / name / "report"), workers=workers)


def child_runs(cfg: CompareConfig, parent_id: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.run.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.run.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["mlflow.runName"]: r for r in runs}, client


def test_workers_give_the_figures_of_one_process_and_log_every_child_run(zoo, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(compare_module, "ensure_zoo", lambda config, echo, progress=None: zoo)
    messages = []
    serial_cfg, parallel_cfg = config(tmp_path, "serial", 1), config(tmp_path, "parallel", 2)
    serial = compare(serial_cfg, echo=lambda m: None)
    parallel = compare(parallel_cfg, echo=messages.append)
    assert (serial["workers"], parallel["workers"]) == (1, 2)
    assert "6 child runs, 2 at a time in single-threaded worker processes" in messages[0]
    assert sum("done" in m for m in messages) == 6

    # the records in the order of one process, whatever order the workers finished in
    order = [(r["encoder"], r["seed"]) for r in parallel["runs"]]
    assert order == [(r["encoder"], r["seed"]) for r in serial["runs"]] == [
        (e, s) for s in (0, 1) for e in ("no_information", "layerwise_statistics", "interactive_probing")]
    on_disk = json.loads((tmp_path / "parallel" / "report" / "runs.json").read_text())
    assert [(r["encoder"], r["seed"]) for r in on_disk] == order
    for a, b in zip(serial["runs"], parallel["runs"]):
        for split, metrics in a["pretrain"]["metrics"].items():
            for metric, value in metrics.items():
                assert math.isclose(value, b["pretrain"]["metrics"][split][metric], rel_tol=1e-6, abs_tol=1e-9), \
                    (a["encoder"], a["seed"], split, metric)
        assert a["pretrain"]["best_step"] == b["pretrain"]["best_step"]
        if "emulation_fidelity" in a:  # nan where a tiny zoo's emulation is constant
            np.testing.assert_allclose(a["emulation_fidelity"]["correlation"], b["emulation_fidelity"]["correlation"],
                                       rtol=1e-5, atol=1e-7, equal_nan=True)
    assert (tmp_path / "parallel" / "report" / "report.md").exists()

    # every child run logged by the parent: finished, its record's run id, its metrics at their steps
    runs, client = child_runs(parallel_cfg, parallel["mlflow"]["parent_run_id"])
    serial_runs, serial_client = child_runs(serial_cfg, serial["mlflow"]["parent_run_id"])
    assert set(runs) == set(serial_runs) and len(runs) == 6
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert {r["mlflow_run_id"] for r in parallel["runs"]} == {r.info.run_id for r in runs.values()}
    for name, run in runs.items():
        assert set(run.data.metrics) == set(serial_runs[name].data.metrics), name
        key = next(k for k in run.data.metrics if k.startswith("train/"))
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [m.step for m in serial_client.get_metric_history(serial_runs[name].info.run_id, key)]
        assert len(steps) > 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"encoder.pt", "results.json"} <= artifacts
    assert mp.active_children() == []


def test_a_worker_error_is_raised_here_and_stops_every_worker(zoo, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(compare_module, "ensure_zoo", lambda config, echo, progress=None: zoo)
    # a setting only the worker's pretraining refuses (compare's own checks are skipped here)
    cfg = config(tmp_path, "error", 2, **{"encoder.options": {"layerwise_statistics.hidden": 0}})
    with pytest.raises(WspaceError, match="layerwise_statistics': bad option 'hidden': expected a positive integer, got 0"):
        compare(cfg, echo=lambda m: None, tracker=Tracker(cfg.run.tracking_uri, cfg.run.experiment))
    assert mp.active_children() == []
    client = MlflowClient(tracking_uri=cfg.run.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("error").experiment_id])
    parent = [r for r in runs if r.data.tags["mlflow.runName"].startswith("compare-")]
    assert [r.info.status for r in parent] == ["FAILED"]
    assert not (tmp_path / "error" / "report" / "report.md").exists()


def test_ctrl_c_stops_every_worker_and_marks_the_parent_killed(zoo, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(compare_module, "ensure_zoo", lambda config, echo, progress=None: zoo)
    real, logged = compare_module._log_finished, []

    def interrupted(*args, **kwargs):  # Ctrl-C once the first run is in MLflow, the others still training
        real(*args, **kwargs)
        logged.append(args[1])
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "_log_finished", interrupted)
    cfg = config(tmp_path, "ctrl-c", 2)
    with pytest.raises(KeyboardInterrupt):
        compare(cfg, echo=lambda m: None, tracker=Tracker(cfg.run.tracking_uri, cfg.run.experiment))
    assert mp.active_children() == []
    client = MlflowClient(tracking_uri=cfg.run.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("ctrl-c").experiment_id])
    status = {r.data.tags["mlflow.runName"]: r.info.status for r in runs}
    assert status == {"compare-lstm-formal_languages": "KILLED", f"{logged[0]}-seed0": "FINISHED"}
    assert not (tmp_path / "ctrl-c" / "report" / "report.md").exists()


def test_a_worker_killed_outright_is_an_error_not_a_wait_forever(zoo, tmp_path, monkeypatch):
    """multiprocessing.Pool replaces a worker killed by SIGKILL (the OOM killer) and would wait for
    its run's result forever; the comparison says which run was lost instead."""
    import os
    import signal

    monkeypatch.setattr(compare_module, "ensure_zoo", lambda config, echo, progress=None: zoo)
    real = compare_module._log_finished

    def kill_the_workers(*args, **kwargs):  # the first run finished: the workers' next runs die
        real(*args, **kwargs)
        for child in mp.active_children():
            os.kill(child.pid, signal.SIGKILL)

    monkeypatch.setattr(compare_module, "_log_finished", kill_the_workers)
    cfg = config(tmp_path, "killed", 2)
    with pytest.raises(WspaceError, match=r"seed \d: pretraining .* its worker process ended without a result"):
        compare(cfg, echo=lambda m: None, tracker=Tracker(cfg.run.tracking_uri, cfg.run.experiment))
    assert mp.active_children() == []
    assert not (tmp_path / "killed" / "report" / "report.md").exists()


def test_how_many_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(workers_module, "available_cores", lambda: 16)
    assert default_workers("cpu") == 8 and default_workers("cuda") == 1 and default_workers("cuda:1") == 1
    run = resolve(preset="smoke", out_dir=str(tmp_path))
    one = CompareConfig(run=run, encoders=("dwsnet",), seeds=(0,))
    assert one.resolved_workers() == 2  # never more workers than child runs (dwsnet and the baseline)
    assert CompareConfig(run=run, encoders=("dwsnet", "flattened_weights"), seeds=(0, 1, 2)).resolved_workers() == 8
    assert CompareConfig(run=run, encoders=("dwsnet",), seeds=(0, 1), workers=3).resolved_workers() == 3
    monkeypatch.setattr(workers_module, "available_cores", lambda: 1)
    assert one.resolved_workers() == 1
    for bad in (0, -2, 1.5, True):
        with pytest.raises(WspaceError, match="workers must be a positive integer"):
            CompareConfig(run=run, encoders=("dwsnet",), seeds=(0,), workers=bad)


def test_bad_workers_flag_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(cli, ["compare", "--preset", "smoke", "--workers", "0", "--encoders", "dwsnet",
                                      "--out-dir", str(tmp_path / "out"), "--no-tracking"])
    assert result.exit_code == 2 and "--workers" in result.output and "at least 1" in result.output
    assert not (tmp_path / "out").exists()
