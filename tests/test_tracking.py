"""Tracking: what is logged to an MLflow store reads back; failures are clear and non-fatal."""

import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from wspace_core.registry import WspaceError
from wspace.tracking import Tracker, flatten_params

mlflow_tracking = pytest.importorskip("mlflow.tracking")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(store):
    return mlflow_tracking.MlflowClient(tracking_uri=store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flatten_params():
    flat = flatten_params({"zoo": {"arch": "lstm", "sizes": {"hidden": 32}}, "seeds": [1, 2], "lr": 1e-3})
    assert flat == {"zoo.arch": "lstm", "zoo.sizes.hidden": "32", "seeds": "[1, 2]", "lr": "0.001"}


def test_params_metrics_tags_artifacts_read_back(store, client, tmp_path):
    tracker = Tracker(store, experiment="readback")
    nested = {"encoder": {"name": "probing", "probe": {"steps": 8}}}
    nested.update({f"p{i:03d}": i for i in range(150)})  # more than one batch of 100
    nested["long"] = "x" * 7000  # over MLflow's 6000-character limit
    (tmp_path / "notes.txt").write_text("hello")
    with tracker.start_run("pretrain", tags={"stage": "pretrain"}) as run_id:
        tracker.log_params(nested)
        for step in range(3):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 2}, step=step)
        tracker.set_tags({"zoo": "smoke"})
        tracker.log_artifact(tmp_path / "notes.txt", artifact_path="notes")
        tracker.log_dict({"a": [1, 2]}, "summary.json")
        where = tracker.run_url_or_path()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "pretrain"
    assert run.data.params["encoder.probe.steps"] == "8" and run.data.params["p149"] == "149"
    assert len(run.data.params["long"]) <= 6000
    assert run.data.tags["stage"] == "pretrain" and run.data.tags["zoo"] == "smoke"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    names = {f.path for f in client.list_artifacts(run_id)} | {
        f.path for f in client.list_artifacts(run_id, "notes")}
    assert {"summary.json", "notes/notes.txt"} <= names
    assert Path(where, "notes", "notes.txt").read_text() == "hello"
    assert Path(store[len("sqlite:///"):]).parent in Path(where).parents  # artifacts beside the db


def test_download_artifact(store, tmp_path):
    tracker = Tracker(store, experiment="download")
    (tmp_path / "encoder.pt").write_bytes(b"weights")
    with tracker.start_run("pretrain") as run_id:
        tracker.log_artifact(tmp_path / "encoder.pt")
        tracker.log_metrics({"fine": 1.0, "not a number": "n/a"}, step=0)  # skipped, not fatal
    got = Tracker(store, experiment="download").download_artifact(run_id, "encoder.pt", tmp_path / "out")
    assert got.read_bytes() == b"weights" and tmp_path / "out" in got.parents
    with pytest.raises(WspaceError, match="no artifact 'missing.pt'"):
        tracker.download_artifact(run_id, "missing.pt")
    with pytest.raises(WspaceError, match="no artifact"):
        tracker.download_artifact("0" * 32, "encoder.pt")


def test_parent_and_child_runs(store, client):
    tracker = Tracker(store, experiment="nesting")
    parent = tracker.start_run("run")
    with tracker.start_run("zoo", parent_run_id=parent) as child:
        tracker.log_metrics({"x": 1}, step=0)
    assert tracker.run_id == parent  # back to the parent after the child ends
    tracker.log_metrics({"y": 2}, step=0)
    tracker.end_run()
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert "x" in client.get_run(child).data.metrics and "y" not in client.get_run(child).data.metrics
    assert client.get_run(parent).data.metrics == {"y": 2.0}


def test_failed_and_killed_status(store, client):
    tracker = Tracker(store, experiment="status")
    with pytest.raises(RuntimeError):
        with tracker.start_run("boom") as failed:
            raise RuntimeError("boom")
    assert client.get_run(failed).info.status == "FAILED"
    killed = tracker.start_run("stop")
    tracker.end_run("KILLED")
    assert client.get_run(killed).info.status == "KILLED"
    with pytest.raises(WspaceError, match="FINISHED, FAILED or KILLED"):
        tracker.end_run("DONE")


def test_resume_existing_run(store, client):
    first = Tracker(store, experiment="resume")
    run_id = first.start_run("long job")
    first.log_params({"seed": 1})
    first.log_metrics({"loss": 3.0}, step=0)
    first.end_run("KILLED")
    again = Tracker(store, experiment="resume")
    with again.start_run(run_id=run_id) as resumed:
        assert resumed == run_id
        again.log_params({"seed": 1})  # same value again is fine
        again.log_metrics({"loss": 2.0}, step=1)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [3.0, 2.0]
    with pytest.raises(WspaceError, match="cannot resume"):
        again.start_run(run_id="0" * 32)


def test_disabled_tracker_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker.disabled()
    with tracker.start_run("nothing", tags={"a": 1}) as run_id:
        tracker.log_params({"a": {"b": 1}})
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.log_dict({"a": 1}, "x.json")
        tracker.set_tags({"b": 2})
        tracker.log_artifact(tmp_path / "does-not-matter")
    assert run_id == "" and tracker.run_url_or_path() is None and not tracker.active
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns


def test_default_uri_is_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker()
    assert tracker.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracker.start_run("default"):
        pass
    where = Path(tracker.run_url_or_path())  # the last run, after it ended
    assert (tmp_path / "mlflow.db").exists() and tmp_path / "mlruns" in where.parents


def test_without_mlflow_installed(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # import fails as if not installed
    with pytest.raises(WspaceError, match="pip install mlflow.*--no-tracking"):
        Tracker(store)
    assert not Tracker(store, enabled=False).active


def test_unusable_sqlite_path_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    with pytest.raises(WspaceError, match="cannot reach the MLflow tracking store.*--tracking-uri"):
        Tracker(uri)


def test_keys_are_made_valid(store, client):
    tracker = Tracker(store, experiment="keys")
    with tracker.start_run("keys") as run_id:
        tracker.log_params({"odd key (x)": 1, "k" * 300: 2})
    keys = set(client.get_run(run_id).data.params)
    assert "odd key _x_" in keys and any(len(k) == 250 and k.startswith("kkk") for k in keys)


def test_unreachable_http_uri_fails_fast_with_fix():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(WspaceError) as err:
        Tracker(uri)
    assert time.monotonic() - start < 15
    assert uri in str(err.value) and "mlflow server" in str(err.value) and "--tracking-uri" in str(err.value)


def test_store_lost_mid_run_warns_once_and_continues(store, caplog, tmp_path):
    tracker = Tracker(store, experiment="lost", local_dir=tmp_path)
    tracker.start_run("flaky")
    tracker.log_metrics({"loss": 1.0}, step=0)
    calls = []

    def gone(*args, **kwargs):
        calls.append(args)
        raise type("MlflowException", (Exception,), {})(
            "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with "
            "exception HTTPConnectionPool: Max retries exceeded (Connection refused)")

    tracker._client.log_batch = gone
    with caplog.at_level(logging.WARNING, logger="wspace.tracking"):
        for step in range(1, 5):
            tracker.log_metrics({"loss": 1.0}, step=step)
        tracker.log_params({"late": 1})
        tracker.end_run()
    warnings = [r for r in caplog.records if "tracking server unreachable" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path) in warnings[0].getMessage()
    assert len(calls) == 1 and not tracker.active  # nothing more is sent or buffered


def test_mistakes_are_not_mistaken_for_outages(store):
    tracker = Tracker(store, experiment="mistakes")
    with tracker.start_run("changed"):
        tracker.log_params({"seed": 1})
        with pytest.raises(WspaceError, match="MLflow rejected parameters"):
            tracker.log_params({"seed": 2})  # MLflow parameters cannot change within a run
        assert tracker.active


def test_no_other_module_imports_mlflow():
    offenders = []
    files = [*(ROOT / "wspace_core").rglob("*.py"), *(ROOT / "wspace").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    assert any(path.name == "tracking.py" for path in files), "the check must see the tracking module"
    for path in files:
        if path.name == "tracking.py" and path.parent.name == "wspace":
            continue
        text = path.read_text()
        if "import mlflow" in text or re.search(r"^\s*from mlflow", text, flags=re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.slow
def test_real_server_going_away_mid_run(tmp_path, caplog):
    """Against a real `mlflow server`: logging works, then the server is killed and training
    goes on after one warning, within seconds."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        tracker = Tracker(uri, experiment="live", local_dir=tmp_path / "local")
        run_id = tracker.start_run("live")
        tracker.log_params({"a": {"b": 1}})
        tracker.log_metrics({"loss": 1.0}, step=0)
        assert tracker.run_url_or_path() == f"{uri}/#/experiments/{tracker._experiment_id}/runs/{run_id}"
        assert mlflow_tracking.MlflowClient(uri).get_run(run_id).data.params == {"a.b": "1"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wspace.tracking"):
        for step in range(1, 20):
            tracker.log_metrics({"loss": 1.0}, step=step)
        tracker.end_run()
    assert time.monotonic() - start < 30
    warnings = [r for r in caplog.records if "tracking server unreachable" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "local") in warnings[0].getMessage()


# ---- hostile or unlucky tracking stores (issue #11, item 7): a message naming the fix, never a
# MlflowException or sqlalchemy traceback, raised before any work, the store left as it was ----------

@pytest.mark.parametrize("uri, pattern", [
    ("garbage://x", "has scheme 'garbage', which MLflow cannot track to; use sqlite:///PATH/mlflow.db"),
    ("mysqll://db/x", "has scheme 'mysqll'"),
])
def test_unknown_scheme_is_a_clear_error(uri, pattern):
    with pytest.raises(WspaceError, match=re.escape(pattern)):
        Tracker(uri)


@pytest.mark.parametrize("form", ["relative", "file"])
def test_file_store_uri_names_the_sqlite_uri_to_use(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    uri = "./tracking" if form == "relative" else (tmp_path / "tracking").as_uri()
    try:
        tracker = Tracker(uri)  # an MLflow that still writes file stores: it simply works
    except WspaceError as err:
        assert f"--tracking-uri sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}" in str(err)
        assert "--no-tracking" in str(err)
    else:
        with tracker.start_run("file store"):
            tracker.log_metrics({"x": 1.0}, 0)


def test_corrupt_sqlite_file_is_refused_and_left_alone(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    with pytest.raises(WspaceError, match="is not a usable MLflow database .*file is not a database.*--no-tracking"):
        Tracker(f"sqlite:///{db}")
    assert db.read_bytes() == before


@pytest.fixture
def read_only_db(tmp_path, store):
    """A finished MLflow database the process cannot write (chmod; as root, an immutable file)."""
    import shutil
    import subprocess

    Tracker(store, experiment="read-only")  # the module's store exists, with an experiment
    db = tmp_path / "ro.db"
    shutil.copy(store[len("sqlite:///"):], db)
    db.chmod(0o444)
    immutable = False
    if os.access(db, os.W_OK):  # root ignores permissions
        immutable = subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a file read-only for this user")
    yield db
    if immutable:
        subprocess.run(["chattr", "-i", str(db)])
    db.chmod(0o644)


def test_read_only_sqlite_file_fails_before_work(read_only_db):
    before = read_only_db.read_bytes()
    with pytest.raises(WspaceError, match="is read-only .*make it .*writable.*--no-tracking"):
        Tracker(f"sqlite:///{read_only_db}", experiment="read-only")
    assert read_only_db.read_bytes() == before


def test_two_processes_creating_one_new_database(tmp_path):
    """Both create (migrate) the same new SQLite store at once: alembic raced before the lock."""
    import subprocess

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    code = ("import sys\nfrom wspace.tracking import Tracker\n"
            f"t = Tracker({uri!r}, 'race')\nwith t.start_run('r'):\n    t.log_metrics({{'x': 1.0}}, 0)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=ROOT) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    runs = mlflow_tracking.MlflowClient(tracking_uri=uri).search_runs(
        [mlflow_tracking.MlflowClient(tracking_uri=uri).get_experiment_by_name("race").experiment_id])
    assert len(runs) == 3


@pytest.mark.parametrize("how", ["flag-garbage", "env-garbage", "flag-corrupt-db"])
def test_bad_tracking_store_refused_by_run_before_any_work(tmp_path, monkeypatch, how):
    from click.testing import CliRunner

    from wspace.cli import cli

    (tmp_path / "bad.db").write_text("not a database")
    uri = {"flag-garbage": "garbage://x", "env-garbage": None, "flag-corrupt-db": f"sqlite:///{tmp_path / 'bad.db'}"}[how]
    if how == "env-garbage":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "garbage://from-the-environment")
    out = tmp_path / "out"
    args = ["run", "--preset", "smoke", "--encoder", "layerwise_statistics", "--out-dir", str(out)]
    result = CliRunner().invoke(cli, args + (["--tracking-uri", uri] if uri else []))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "Error: " in result.output
    assert "--no-tracking" in result.output
    assert not (out / "zoos").exists()  # refused before the zoo build
