"""The whole `wspace run` against a real `mlflow server` (a subprocess on 127.0.0.1): what it logs
reads back with MlflowClient (parameters, metrics with their steps, artifacts), `wspace predict`
finds the encoder by run id, and a server that dies mid-run costs one warning, not the run.
(tests/test_tracking.py tests the Tracker alone against a server; here it is the command.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

mlflow_tracking = pytest.importorskip("mlflow.tracking")

pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT_S = 120
WARNING = "tracking server unreachable"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """An `mlflow server` on a free port with its own SQLite store and artifact root; always stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--default-artifact-root", str(folder / "art")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_env())
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not answer in time"
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)
        log.close()


def wspace(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wspace", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def test_wspace_run_logs_to_a_real_server(tmp_path):
    out = tmp_path / "out"
    with mlflow_server(tmp_path / "server") as (uri, _):
        done = wspace("run", "--preset", "smoke", "--encoder", "layerwise_statistics", "--zoo-models", "12",
                      "--out-dir", str(out), "--tracking-uri", uri, "--experiment", "served")
        assert done.returncode == 0, done.stderr[-3000:]
        assert WARNING not in done.stderr and "Traceback" not in done.stderr
        (results_file,) = out.glob("runs/*/results.json")
        results = json.loads(results_file.read_text())
        run_id = results["mlflow_run_id"]
        assert f"{uri}/#/experiments/" in done.stdout and run_id in done.stdout

        client = mlflow_tracking.MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert client.get_experiment(run.info.experiment_id).name == "served"
        params = run.data.params
        assert params["encoder.name"] == "layerwise_statistics" and params["preset"] == "smoke"
        assert params["zoo.num_models"] == "12" and params["tracking_uri"] == uri
        steps = int(params["pretrain.steps"])
        every = int(params["pretrain.eval_every"])
        history = client.get_metric_history(run_id, "validation/reverse_kl")
        assert sorted(m.step for m in history) == sorted({0, *range(every, steps + 1, every), steps})
        assert {m.step for m in client.get_metric_history(run_id, "train/loss")} == set(range(10, steps + 1, 10))
        assert "ood/total_variation" in run.data.metrics
        assert any(k.startswith("downstream/") for k in run.data.metrics)
        assert any(k.startswith("baseline/") for k in run.data.metrics)
        assert run.data.tags["zoo_fingerprint"] == results["zoo_fingerprint"]
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"encoder.pt", "config.json", "results.json", "plots"} <= artifacts
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert {"plots/embedding_by_task.png", "plots/emulation_fidelity.png"} <= plots
        fetched = Path(client.download_artifacts(run_id, "results.json", str(tmp_path / "fetched")))
        assert json.loads(fetched.read_text())["mlflow_run_id"] == run_id

        # the encoder is found through the server by run id alone
        predicted = wspace("predict", "--run", run_id, "--tracking-uri", uri, "--json")
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        payload = json.loads(predicted.stdout[predicted.stdout.index("{"):])
        assert set(payload["frozen"]) == {"task", "performance"}
    assert not any(p.name == "mlflow.db" for p in tmp_path.rglob("mlflow.db"))  # nothing went to a local store


LONG_RUN = """
preset = "smoke"
encoder = "layerwise_statistics"
experiment = "lost"
[zoo]
num_models = 12
[pretrain]
steps = 150
eval_every = 50
checkpoint_every = 10
patience = 50
"""


def test_server_lost_mid_run_costs_one_warning(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "run.toml").write_text(LONG_RUN)
    log = tmp_path / "run.log"
    with mlflow_server(tmp_path / "server") as (uri, server):
        client = mlflow_tracking.MlflowClient(tracking_uri=uri)
        with open(log, "w") as f:
            run = subprocess.Popen([sys.executable, "-m", "wspace", "run", "--config", str(tmp_path / "run.toml"),
                                    "--out-dir", str(out), "--tracking-uri", uri],
                                   stdout=f, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            logged = []
            while not logged:  # wait for the run's first metrics on the server
                assert run.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the run logged no metrics"
                records = list(out.glob("runs/*/run.json"))
                if records:
                    run_id = json.loads(records[0].read_text())["mlflow_run_id"]
                    logged = client.get_metric_history(run_id, "validation/reverse_kl")
                time.sleep(0.05)
            stop(server, signal.SIGKILL)  # the server goes away mid-run
            run_dir = records[0].parent
            assert not (run_dir / "results.json").exists()
            code = run.wait(timeout=300)
        finally:
            stop(run, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert text.count(WARNING) == 1, text[-3000:]
    (warning,) = [line for line in text.splitlines() if WARNING in line]
    assert "training continues" in warning and str(run_dir) in warning
    assert "Traceback" not in text
    results = json.loads((run_dir / "results.json").read_text())
    assert results["encoder_result"]["steps_done"] == 150 and results["mlflow_run_id"] == run_id
    assert (run_dir / "encoder.pt").exists() and (run_dir / "emulation_fidelity.png").exists()
    assert "not tracked to the end" in text
