"""Experiment tracking: the one module that talks to MLflow (nothing else imports it).

``Tracker`` logs runs to any MLflow tracking URI: by default ``$MLFLOW_TRACKING_URI`` or an
embedded SQLite store ``sqlite:///<cwd>/mlflow.db`` with artifacts under ``<cwd>/mlruns``.
mlflow is imported lazily, so wspace works without it when tracking is off.

Robustness: a tracking store that cannot be reached when the tracker starts is a ``WspaceError``
naming the URI and the fix; one that goes away during a run is warned about once, after which the
tracker stops logging and training carries on (what the caller writes to its ``local_dir`` stays).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Literal, Mapping

from wspace_core.registry import WspaceError

log = logging.getLogger("wspace.tracking")

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]

#: Limits of the MLflow REST API (read from mlflow when available; these are its values).
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_KEY_LENGTH = 250

#: http(s) tracking servers: fail within seconds, not after mlflow's default ~4 minutes of retries.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
REACHABILITY_TIMEOUT_S = 5.0

#: Loggers that announce routine database set-up at INFO; their warnings and errors still show.
QUIET_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.store.sql_alchemy")


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": "1", "c": "[1, 2]"}: dotted keys, string values."""
    flat: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = str(value)
    return flat


def _safe_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / :`` and spaces, up to 250 characters."""
    key = re.sub(r"[^\w\-./ :]", "_", key)
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return key[: MAX_KEY_LENGTH - 9] + "-" + hashlib.sha1(key.encode()).hexdigest()[:8]  # stable cut


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.unquote(uri[len("sqlite:///"):].split("?")[0]))


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _unreachable_message(uri: str, detail: str) -> str:
    if _is_http(uri):
        fix = (f"start the server (e.g. `mlflow server --host 127.0.0.1 --port "
               f"{urllib.parse.urlparse(uri).port or 5000}`) or check --tracking-uri / "
               f"MLFLOW_TRACKING_URI; or pass --no-tracking")
    else:
        fix = ("check that the path exists and is writable, or pass another --tracking-uri "
               "(or set MLFLOW_TRACKING_URI); or pass --no-tracking")
    return f"cannot reach the MLflow tracking store at {uri} ({detail}); {fix}."


#: URI schemes MLflow's tracking client accepts as a store (sqlalchemy ones may name a driver: mysql+pymysql)
STORE_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def _is_file_store(uri: str) -> bool:
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")  # a path (C:\\ on Windows)


def _file_store_message(uri: str, detail: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    folder = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else uri)
    return (f"tracking URI {uri!r} is a folder (MLflow's file store), which this MLflow refuses ({detail}); "
            f"use a database in it, --tracking-uri sqlite:///{folder.expanduser().resolve() / 'mlflow.db'}, "
            f"or an http(s):// server, or pass --no-tracking")


def _check_scheme(uri: str) -> None:
    """Refuse, naming what works, a scheme MLflow cannot track to (it fails with a traceback)."""
    scheme = urllib.parse.urlparse(uri).scheme
    if not _is_file_store(uri) and scheme.split("+")[0] not in STORE_SCHEMES:
        raise WspaceError(f"tracking URI {uri!r} has scheme {scheme!r}, which MLflow cannot track to; use "
                          f"sqlite:///PATH/mlflow.db, http(s)://HOST:PORT or another of "
                          f"{', '.join(STORE_SCHEMES)} (check --tracking-uri and $MLFLOW_TRACKING_URI), "
                          f"or pass --no-tracking")


def _check_sqlite_writable(uri: str, db: Path) -> None:
    """An existing SQLite file must be a database this process can write (a read-only or damaged
    file otherwise fails only when the first run is logged, after the work)."""
    import sqlite3

    if not db.exists():
        return
    try:
        con = sqlite3.connect(db, timeout=60, isolation_level=None)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            con.execute("BEGIN IMMEDIATE")
            con.execute(f"PRAGMA user_version = {int(version)}")  # a write, rolled back: nothing changes
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        if "readonly" in str(err) or "read-only" in str(err):
            raise WspaceError(f"the MLflow database {db} is read-only ({err}); make it (and its folder) "
                              f"writable, pass another --tracking-uri, or pass --no-tracking") from None
        raise WspaceError(f"{db} is not a usable MLflow database ({err}); it is left as it is: pass another "
                          f"--tracking-uri (e.g. sqlite:///{db.parent / 'mlflow-new.db'}), or --no-tracking") from None


@contextlib.contextmanager
def _store_lock(db: Path | None):
    """Serialise the creation of a new SQLite store: two processes creating (migrating) one
    database at once make alembic fail. A lock file next to it, POSIX only."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        fcntl = None
    handle = None
    if db is not None and fcntl is not None:
        try:
            handle = open(db.with_name(db.name + ".lock"), "a")
        except OSError:  # an unwritable folder: the store itself will say so
            handle = None
    if handle is None:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _check_http_reachable(uri: str) -> None:
    """Any HTTP answer counts as reachable; a refused or timed-out connection does not."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=REACHABILITY_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # the server answered
    except (OSError, ValueError) as err:
        raise WspaceError(_unreachable_message(uri, f"{type(err).__name__}: {err}")) from None


def _is_unavailable(err: BaseException) -> bool:
    """True for errors meaning the store went away (not for a mistake in what was logged)."""
    if isinstance(err, (OSError, TimeoutError)):
        return True
    if getattr(err, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
        return True
    module = type(err).__module__ or ""
    if module.startswith(("requests", "urllib3")):
        return True
    if type(err).__name__ == "OperationalError" and module.startswith("sqlalchemy"):
        return True
    text = str(err)
    if "API request to" in text and "failed" in text:  # mlflow's REST client after its retries
        return True
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and _is_unavailable(cause)


def _quiet_mlflow_logs() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


class RunId(str):
    """A run id that is also a context manager: ending the run FINISHED, FAILED on an exception,
    or KILLED on Ctrl-C."""

    tracker: "Tracker"

    def __new__(cls, value: str, tracker: "Tracker") -> "RunId":
        obj = super().__new__(cls, value)
        obj.tracker = tracker
        return obj

    def __enter__(self) -> "RunId":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self.tracker.end_run(status, run_id=str(self))
        return False


class Tracker:
    """Logs runs, parameters, metrics, tags and artifacts to an MLflow tracking store.

    ``enabled=False`` gives a tracker that does nothing (``--no-tracking``; mlflow not needed).
    ``local_dir``: where the caller also keeps its results, named in the warning if the store
    goes away mid-run. Runs nest: ``start_run`` makes the new run the current one and
    ``end_run`` returns to the run that was current before.
    """

    def __init__(self, uri: str | None = None, experiment: str = "wspace", *, enabled: bool = True,
                 local_dir: str | os.PathLike | None = None):
        self.enabled = enabled
        self.experiment = experiment
        self.local_dir = Path(local_dir) if local_dir is not None else None
        self.uri = (uri or default_tracking_uri()) if enabled else uri
        self._stack: list[str] = []
        self._last: str | None = None  # the most recently started or resumed run
        self._lost = False
        self._client = None
        self._experiment_id: str | None = None
        if enabled:
            self._connect()

    @classmethod
    def disabled(cls) -> "Tracker":
        """A tracker that logs nothing."""
        return cls(None, enabled=False)

    @property
    def active(self) -> bool:
        """Whether calls reach the store (False when disabled or after the store went away)."""
        return self.enabled and not self._lost

    @property
    def run_id(self) -> str | None:
        """The current run, if any."""
        return self._stack[-1] if self._stack else None

    # ---- connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise WspaceError("tracking needs mlflow, which is not installed: `pip install mlflow`, "
                              "or pass --no-tracking.") from None
        _quiet_mlflow_logs()
        uri = self.uri
        _check_scheme(uri)
        db = _sqlite_path(uri)
        if _is_http(uri):
            for name, value in HTTP_ENV_DEFAULTS.items():
                os.environ.setdefault(name, value)
            _check_http_reachable(uri)
        elif db is not None:
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise WspaceError(_unreachable_message(uri, str(err))) from None
        try:
            with _store_lock(db):
                if db is not None:
                    _check_sqlite_writable(uri, db)
                self._client = MlflowClient(tracking_uri=uri)  # creates (migrates) a new database
                self._experiment_id = self._ensure_experiment(db)
        except WspaceError:
            raise
        except Exception as err:  # mlflow wraps store failures in many types
            if _is_file_store(uri):
                raise WspaceError(_file_store_message(uri, _short(err).split(". ")[0])) from None
            if _is_unavailable(err) or db is not None:
                raise WspaceError(_unreachable_message(uri, _short(err))) from None
            raise WspaceError(f"the MLflow tracking store at {uri} refused experiment "
                              f"{self.experiment!r}: {_short(err)}") from None

    def _ensure_experiment(self, db: Path | None) -> str:
        client = self._client
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            location = None
            if db is not None:  # artifacts next to the database, not wherever the process runs
                safe = re.sub(r"[^\w\-.]", "_", self.experiment)
                location = (db.parent / "mlruns" / safe).resolve().as_uri()
            try:
                return client.create_experiment(self.experiment, artifact_location=location)
            except Exception:  # created meanwhile by another process
                found = client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise WspaceError(
                f"MLflow experiment {self.experiment!r} at {self.uri} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {found.experiment_id}`) or choose "
                f"another experiment name."
            )
        return found.experiment_id

    def _call(self, what: str, fn, *args, **kwargs):
        """Run a store call; if the store has gone away, warn once and stop logging."""
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if not _is_unavailable(err):
                raise WspaceError(f"MLflow rejected {what} for run {self.run_id}: {_short(err)}") from err
            self._lost = True
            where = (f"results are kept in {self.local_dir}" if self.local_dir is not None
                     else "the rest of this run is not tracked")
            log.warning("tracking server unreachable; training continues, %s (%s failed at %s: %s).",
                        where, what, self.uri, _short(err))
            return None

    # ---- runs ---------------------------------------------------------------------------------

    def start_run(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
                  parent_run_id: str | None = None, run_id: str | None = None) -> RunId:
        """Start a run (a child of ``parent_run_id`` if given), or resume run ``run_id``.
        Returns its id, usable as ``with tracker.start_run(...) as run_id:``."""
        if not self.active:
            return RunId(run_id or "", self)
        tag_map = {_safe_key(k): str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tag_map["mlflow.parentRunId"] = str(parent_run_id)
        if run_id is not None:
            try:
                run = self._client.get_run(run_id)
            except Exception as err:
                if _is_unavailable(err):
                    raise WspaceError(_unreachable_message(self.uri, _short(err))) from None
                raise WspaceError(f"cannot resume MLflow run {run_id!r} at {self.uri}: it does not "
                                  f"exist there ({_short(err)}); check the run id and --tracking-uri.") from None
            if run.info.status != "RUNNING":
                self._call("resuming the run", self._client.update_run, run_id, status="RUNNING")
            self._stack.append(run_id)
            self._last = run_id
            if name:
                tag_map["mlflow.runName"] = name
            self.set_tags(tag_map)
            return RunId(run_id, self)
        try:
            run = self._client.create_run(self._experiment_id, run_name=name, tags=tag_map)
        except Exception as err:
            if _is_unavailable(err):
                raise WspaceError(_unreachable_message(self.uri, _short(err))) from None
            raise WspaceError(f"the MLflow tracking store at {self.uri} refused a new run: {_short(err)}; "
                              f"check --tracking-uri, or pass --no-tracking") from None
        self._stack.append(run.info.run_id)
        self._last = run.info.run_id
        return RunId(run.info.run_id, self)

    def end_run(self, status: RunStatus = "FINISHED", run_id: str | None = None) -> None:
        """End the current run (or ``run_id``) with FINISHED, FAILED or KILLED."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise WspaceError(f"unknown run status {status!r}; use FINISHED, FAILED or KILLED.")
        target = run_id or self.run_id
        if not target:
            return
        if target in self._stack:
            self._stack.remove(target)
        self._call("ending the run", self._client.set_terminated, target, status)

    # ---- logging ------------------------------------------------------------------------------

    def _require_run(self) -> str | None:
        if not self.active:
            return None
        if self.run_id is None:
            raise WspaceError("no tracking run is active; call Tracker.start_run first.")
        return self.run_id

    def log_params(self, nested: Mapping[str, Any]) -> None:
        """Log (nested) parameters with dotted keys, at most 100 per request; values longer than
        MLflow allows are cut (with a warning)."""
        run = self._require_run()
        if run is None:
            return
        from mlflow.entities import Param

        limit = _param_value_limit()
        params = []
        for key, value in flatten_params(nested).items():
            if len(value) > limit:
                log.warning("parameter %s is %d characters long; logged cut to MLflow's %d.",
                            key, len(value), limit)
                value = value[: limit - 3] + "..."
            params.append(Param(_safe_key(key), value))
        for batch in _chunks(params, MAX_PARAMS_PER_BATCH):
            self._call("parameters", self._client.log_batch, run, params=batch)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics (tensors and numpy scalars are fine) at ``step``."""
        run = self._require_run()
        if run is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            try:
                entries.append(Metric(_safe_key(key), float(value), now, int(step or 0)))
            except (TypeError, ValueError):
                log.warning("metric %s = %r is not a number; not logged.", key, value)
        for batch in _chunks(entries, MAX_METRICS_PER_BATCH):
            self._call("metrics", self._client.log_batch, run, metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the current run."""
        run = self._require_run()
        if run is None:
            return
        from mlflow.entities import RunTag

        entries = [RunTag(_safe_key(k), str(v)) for k, v in tags.items()]
        for batch in _chunks(entries, MAX_PARAMS_PER_BATCH):
            self._call("tags", self._client.log_batch, run, tags=batch)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file (or a whole directory) into the run's artifacts, under ``artifact_path``."""
        run = self._require_run()
        if run is None:
            return
        path = Path(path)
        if not path.exists():
            raise WspaceError(f"cannot log artifact {path}: no such file or directory.")
        fn = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
        self._call(f"artifact {path.name}", fn, run, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """Write ``obj`` as JSON (or YAML for a .yaml name) to artifact ``name``."""
        run = self._require_run()
        if run is None:
            return
        self._call(f"artifact {name}", self._client.log_dict, run, obj, name)

    def download_artifact(self, run_id: str, artifact_path: str,
                          dst_dir: str | os.PathLike | None = None) -> Path:
        """Fetch artifact ``artifact_path`` of run ``run_id`` (into ``dst_dir`` or a temporary
        directory) and return its local path."""
        if not self.active:
            raise WspaceError(f"cannot fetch {artifact_path!r} of run {run_id!r}: tracking is off or "
                              f"unreachable; pass the run's local directory instead.")
        try:
            local = self._client.download_artifacts(run_id, artifact_path,
                                                    str(dst_dir) if dst_dir is not None else None)
        except Exception as err:
            if _is_unavailable(err) and not isinstance(err, FileNotFoundError):
                raise WspaceError(_unreachable_message(self.uri, _short(err))) from None
            raise WspaceError(f"run {run_id!r} at {self.uri} has no artifact {artifact_path!r} "
                              f"({_short(err)}); check the run id and --tracking-uri.") from None
        return Path(local)

    # ---- where to look ------------------------------------------------------------------------

    def run_url_or_path(self, run_id: str | None = None) -> str | None:
        """Where a run (default: the current one, else the last one started) can be looked at:
        the UI URL on an http(s) server, else the local directory holding its artifacts
        (None when disabled or unreachable)."""
        target = run_id or self.run_id or self._last
        if not self.active or not target:
            return None
        if _is_http(self.uri):
            return f"{self.uri.rstrip('/')}/#/experiments/{self._experiment_id}/runs/{target}"
        run = self._call("looking up the run", self._client.get_run, target)
        if run is None:
            return None
        uri = run.info.artifact_uri
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme in ("", "file"):
            return urllib.request.url2pathname(parsed.path) if parsed.scheme else uri
        return uri

    def __repr__(self) -> str:
        state = "disabled" if not self.enabled else ("lost" if self._lost else "active")
        return f"Tracker({self.uri!r}, experiment={self.experiment!r}, {state})"


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _param_value_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return 500  # mlflow < 2.? limit
    return int(MAX_PARAM_VAL_LENGTH)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(err).__name__
