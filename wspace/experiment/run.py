"""`wspace run`: zoo (built or reused by fingerprint) -> emulation pretraining -> evaluation,
against the no-information baseline, all logged to one MLflow run."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import torch

from wspace.training import distributed
from wspace.config import RunConfig, config_from_dict
from wspace.evaluation.downstream import headline, predict_frozen, properties_of
from wspace.training.emulation import EmulatorArchitecture
from wspace.training.pretrain import PretrainResult, ZooSplit, build_encoder, embed, encoder_context, pretrain
from wspace_core.registry import WspaceError
from wspace.validation import check_encoder_fits
from wspace.zoo.lock import LOCK_NAME, lock_alive, read_lock

BASELINE = "no_information"
#: files of a run directory: its configuration, its MLflow run, its checkpoint, its results
CONFIG_JSON, RUN_JSON, CHECKPOINT, RESULTS_JSON = "config.json", "run.json", "checkpoint.pt", "results.json"

Echo = Callable[[str], None]


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def zoo_config_for(config: RunConfig):
    from wspace.zoo.build import zoo_config

    return zoo_config(config.task, config.zoo, config.arch, config.device)


def zoo_path_for(config: RunConfig, zoo_config=None) -> Path:
    """Where the zoo of ``config`` lives: ``out_dir/zoos/<arch>-<task>-<digest of its settings>``."""
    zoo_config = zoo_config_for(config) if zoo_config is None else zoo_config
    settings = {k: v for k, v in attrs.asdict(zoo_config).items() if k != "device"}  # a zoo is the same on any device
    return Path(config.out_dir) / "zoos" / f"{config.arch}-{config.task}-{_digest(settings)}"


def ensure_zoo(config: RunConfig, echo: Echo, progress=None):
    """The zoo this run learns from: reused when one with the same configuration exists
    under ``out_dir/zoos``, resumed when a build of it was interrupted, built otherwise
    (under torchrun: built by all ranks, each its shard, and merged by rank 0)."""
    from wspace.training.distributed import build_zoo
    from wspace.zoo.store import Zoo

    if config.zoo_path:  # a zoo the user built or imported
        zoo = Zoo.open(config.zoo_path, expect_arch=config.arch)
        if zoo.manifest["task"]["name"] != config.task:
            raise WspaceError(
                f"zoo {config.zoo_path} holds task family {zoo.manifest['task']['name']!r}, not "
                f"{config.task!r}; pass --task {zoo.manifest['task']['name']} or another --zoo"
            )
        echo(f"using zoo {config.zoo_path}")
        return zoo
    zoo_config = zoo_config_for(config)
    path = zoo_path_for(config, zoo_config)
    ctx = distributed.setup(config.device)
    manifest = None
    if ctx.is_main and (path / "manifest.json").exists():
        manifest = json.loads((path / "manifest.json").read_text())
    manifest = distributed.broadcast_object(manifest, ctx)  # under torchrun all take rank 0's branch
    if manifest is not None:
        if manifest.get("status") == "complete":
            echo(f"reusing zoo {path}")
            return Zoo.open(path, expect_arch=config.arch)
        held = (path / LOCK_NAME).exists() and lock_alive(path, LOCK_NAME, read_lock(path)) is not False
        if not held:  # a builder that may be alive: build_zoo names it instead
            echo(f"resuming the interrupted zoo build in {path}")
        return build_zoo(zoo_config, path, resume=True, progress=progress)
    echo(f"building zoo {path} ({zoo_config.num_models} {config.arch} networks on {config.task})")
    return build_zoo(zoo_config, path, resume=False, progress=progress)


def result_summary(result: PretrainResult) -> dict:
    """The JSON-ready summary of a pretraining (best step, metrics, steps done, seconds; which
    metric the best state was chosen on, and what each metric computes)."""
    return {"best_step": result.best_step, "best_validation": result.best_validation,
            "metrics": result.metrics, "steps_done": result.steps_done,
            "stopped_early": result.stopped_early, "seconds": result.seconds,
            "objective_metric": result.objective_metric, "metric_info": result.metric_info}


def baseline_result(zoo, config: RunConfig, echo: Echo, progress=None) -> dict:
    """The no-information floor for this zoo and pretraining configuration (cached on disk)."""
    key = _digest({"zoo": zoo.fingerprint, "pretrain": attrs.asdict(config.pretrain),
                   "z_dim": config.z_dim, "seed": config.seed, "preset": config.preset})
    path = Path(config.out_dir) / "baselines" / f"{key}.json"
    ctx = distributed.setup(config.device)
    cached = json.loads(path.read_text()) if ctx.is_main and path.exists() else None
    cached = distributed.broadcast_object(cached, ctx)  # under torchrun all take rank 0's branch
    if cached is not None:
        echo(f"reusing the no-information baseline {path}")
        return cached
    echo("training the no-information baseline (z carries nothing about the network)")
    result = pretrain(zoo, BASELINE, config.pretrain, z_dim=config.z_dim, preset=config.preset,
                      seed=config.seed, device=config.device, progress=progress)
    summary = result_summary(result)
    if not ctx.is_main:  # under torchrun rank 0 alone writes
        return summary
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)
    return summary


@torch.no_grad()
def embeddings(result: PretrainResult, zoo, split: str, device: str, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(rows, z) of every network in a split."""
    data = ZooSplit(zoo, split, torch.device(device))
    result.encoder.eval()
    zs = []
    for start in range(0, len(data), batch_size):
        rows = data.rows[start:start + batch_size]
        params, _, _, _ = data.batch(rows, None, 1)
        zs.append(embed(result.encoder, data, params).cpu())
    result.encoder.train()
    return data.rows, torch.cat(zs).numpy()


@torch.no_grad()
def emulation_fidelity(result: PretrainResult, zoo, split: str, device: str, max_networks: int = 48,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Original performance vs the emulation's performance, the task family scoring the emulator
    conditioned on each network's z exactly as it scored the network (the paper's Fig. 5)."""
    rows, z = embeddings(result, zoo, split, device)
    pick = np.linspace(0, len(rows) - 1, num=min(max_networks, len(rows))).round().astype(int)
    rows, z = rows[pick], z[pick]
    task, arch = zoo.task_family(), zoo.architecture()
    meta = zoo.metadata
    tasks = torch.tensor(np.stack([meta[c][rows] for c in task.task_columns], axis=1), dtype=torch.float64)
    emulated = EmulatorArchitecture(result.emulator.eval(), arch.sizes)
    generators = [torch.Generator().manual_seed(seed * 1_000_003 + int(r)) for r in rows]
    metrics = task.evaluate(emulated, {"z": torch.from_numpy(z).to(device)}, tasks, generators)
    result.emulator.train()
    first = task.metric_columns[0]
    return {"rows": rows, "original": meta[first][rows], "emulated": metrics[first].cpu().numpy()}


def task_labels(zoo, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) an integer per distinct task of the networks at ``rows`` (plot colours)."""
    task = zoo.task_family()
    cols = np.stack([zoo.metadata[c][rows] for c in task.task_columns], axis=1)
    _, labels = np.unique(cols.round(6), axis=0, return_inverse=True)
    return labels.reshape(-1)


def run(config: RunConfig, echo: Echo = print, zoo_progress=None, pretrain_progress=None,
        tracker=None, run_dir: str | Path | None = None) -> dict:
    """The whole line at the configured preset; returns the results dictionary (also results.json).
    ``run_dir``: continue the run in that directory (its MLflow run, its checkpoint) instead of
    starting a new one; ``resume_run`` is the way in."""
    from wspace.reporting import plots
    from wspace.tracking import Tracker

    t0 = time.perf_counter()
    ctx = distributed.setup(config.device)  # under torchrun: join the job (one process: nothing)
    if not ctx.is_main:  # rank 0 alone prints, tracks and writes; the others train along
        tracker, echo, zoo_progress, pretrain_progress = Tracker.disabled(), _silent, None, None
    tracker = tracker or Tracker(config.tracking_uri, config.experiment, enabled=config.tracking)
    resuming = run_dir is not None
    if resuming:  # a checkpoint that cannot be continued fails now, not after the baseline has trained
        check_resumable(run_dir, config)
    zoo = ensure_zoo(config, echo, zoo_progress)
    # a bad encoder option, or one too large for this machine, fails now, not after the baseline has trained
    check_encoder_fits(config.encoder, encoder_context(zoo, config.z_dim, config.preset, config.encoder_options),
                       config.device)
    if not resuming:
        run_dir = _new_run_dir(config) if ctx.is_main else ""
        run_dir = distributed.broadcast_object(str(run_dir), ctx)  # rank 0's name on every rank
        if ctx.is_main:
            _write_json(Path(run_dir) / CONFIG_JSON, attrs.asdict(config))
    run_dir = Path(run_dir)
    echo(f"{'continuing' if resuming else 'run directory'} {run_dir}")
    if getattr(tracker, "local_dir", False) is None:
        tracker.local_dir = run_dir  # named in the warning if the tracking store goes away
    try:
        baseline = baseline_result(zoo, config, echo, pretrain_progress)
    except KeyboardInterrupt as err:
        err.run_dir = run_dir  # what the interrupted run leaves is told from its directory
        raise

    record = read_run_record(run_dir) if resuming else {}
    same_store = record.get("tracking_uri") == tracker.uri and record.get("experiment") == tracker.experiment
    resume_id = record.get("mlflow_run_id") if same_store and getattr(tracker, "active", False) else None
    if record.get("mlflow_run_id") and getattr(tracker, "active", False) and not resume_id:
        echo(f"the run was tracked at {record.get('tracking_uri')}; logging the rest to a new MLflow run "
             f"at {tracker.uri}")
    run_id = tracker.start_run(
        f"{config.encoder}-{config.task}",
        tags={"arch": config.arch, "task": config.task, "encoder": config.encoder,
              "zoo_fingerprint": zoo.fingerprint, "preset": config.preset},
        **({"run_id": resume_id} if resume_id else {}),
    )
    tracked = bool(getattr(tracker, "active", False))
    if tracked or not record:  # an untracked continuation keeps the record of the tracked run
        record = {"mlflow_run_id": str(run_id) or None, "tracking_uri": tracker.uri, "experiment": tracker.experiment,
                  "params_logged": bool(resume_id and record.get("params_logged"))}
        if ctx.is_main:
            _write_json(run_dir / RUN_JSON, record)
    status = "FAILED"
    try:
        if tracked and not record.get("params_logged"):  # logged once per MLflow run (params are immutable)
            tracker.log_params(attrs.asdict(config))
            tracker.log_artifact(run_dir / CONFIG_JSON)
            if ctx.is_main and getattr(tracker, "active", False):
                _write_json(run_dir / RUN_JSON, {**record, "params_logged": True})
        checkpoint_found = bool(distributed.broadcast_object(resuming and (run_dir / CHECKPOINT).exists(), ctx))
        if checkpoint_found:
            echo(f"pretraining {config.encoder} from its last checkpoint ({config.pretrain.steps} steps at most)")
        else:
            echo(f"pretraining {config.encoder} by emulation ({config.pretrain.steps} steps at most)")
        result = pretrain(
            zoo, config.encoder, config.pretrain, z_dim=config.z_dim, preset=config.preset,
            encoder_options=config.encoder_options, seed=config.seed, device=config.device,
            checkpoint_dir=run_dir, resume=checkpoint_found, log_metrics=tracker.log_metrics,
            progress=pretrain_progress,
        )
        if not ctx.is_main:  # rank 0 evaluates, plots and logs; every rank returns its results
            status = "FINISHED"
            return distributed.broadcast_object(None, ctx)
        torch.save({"encoder": result.encoder.state_dict(), "emulator": result.emulator.state_dict(),
                    "encoder_name": config.encoder, "config": json.dumps(attrs.asdict(config)),
                    "zoo_fingerprint": zoo.fingerprint},  # what `wspace predict` finds the zoo by
                   run_dir / "encoder.pt")
        tracker.log_artifact(run_dir / "encoder.pt")

        rows, z = embeddings(result, zoo, "validation", config.device)
        perf = zoo.metadata[zoo.task_family().metric_columns[0]][rows]
        plot_paths = [
            plots.embedding_plot(z, task_labels(zoo, rows), f"{config.encoder}: z of validation networks",
                                 run_dir / "embedding_by_task.png", color_label="task"),
            plots.embedding_plot(z, perf, f"{config.encoder}: z of validation networks",
                                 run_dir / "embedding_by_performance.png", color_label="performance"),
        ]
        fidelity = emulation_fidelity(result, zoo, "validation", config.device, seed=config.seed)
        plot_paths.append(plots.fidelity_plot(fidelity["original"], fidelity["emulated"],
                                              run_dir / "emulation_fidelity.png",
                                              f"{config.encoder}: emulation fidelity (validation)"))
        for path in plot_paths:
            tracker.log_artifact(path, "plots")

        echo("predicting properties from the frozen z")
        downstream = predict_frozen(result.encoder, zoo, properties_of(zoo),
                                    config.downstream, seed=config.seed, device=config.device)
        tracker.log_metrics({f"downstream/{prop}/{split}/{k}": v for prop, splits in downstream.items()
                             for split, ms in splits.items() for k, v in ms.items()}, result.best_step)
        objective = result.objective_metric
        results = {
            "encoder": config.encoder, "task": config.task, "arch": config.arch, "preset": config.preset,
            "zoo": str(zoo.path), "zoo_fingerprint": zoo.fingerprint, "objective": config.pretrain.objective,
            "loss_positions": config.pretrain.loss_positions, "objective_metric": objective,
            "encoder_result": result_summary(result), "baseline": baseline,
            "emulation_fidelity": {"original_mean": float(np.mean(fidelity["original"])),
                                   "emulated_mean": float(np.mean(fidelity["emulated"])),
                                   "correlation": pearson(fidelity["original"], fidelity["emulated"])},
            "downstream_frozen": downstream,
            "beats_baseline": result.metrics["validation"][objective] < baseline["metrics"]["validation"][objective],
            "run_dir": str(run_dir), "mlflow_run_id": run_id, "seconds": time.perf_counter() - t0,
        }
        tracker.log_metrics({f"best/{s}/{m}": v for s, ms in result.metrics.items() for m, v in ms.items()},
                            result.best_step)
        tracker.log_metrics({f"baseline/{s}/{m}": v for s, ms in baseline["metrics"].items()
                             for m, v in ms.items()}, 0)
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=json_default))
        tracker.log_artifact(run_dir / "results.json")
        results["tracking"] = tracker.run_url_or_path()
        status = "FINISHED"
        if ctx.enabled:  # the other ranks return these results, as plain JSON data
            distributed.broadcast_object(json.loads(json.dumps(results, default=json_default)), ctx)
        return results
    except KeyboardInterrupt as err:
        status = "KILLED"
        err.run_dir = run_dir
        raise
    except WspaceError as err:  # e.g. a diverged pretraining: said in the MLflow run too
        tracker.set_tags({"wspace.error": str(err)})
        raise
    finally:
        tracker.end_run(status)


def interrupted_message(run_dir: str | Path | None) -> str:
    """What an interrupted `wspace run` leaves behind, as it is on disk."""
    if run_dir is None:
        return ("interrupted before the run directory was made: the zoo keeps every committed chunk; "
                "run the same command again to continue")
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        return (f"interrupted: the zoo keeps every committed chunk and the run its last pretraining checkpoint; "
                f"continue it with `wspace run --resume {run_dir}`")
    return (f"interrupted before the first pretraining checkpoint (nothing of the pretraining is saved yet); "
            f"`wspace run --resume {run_dir}` starts the run again with its configuration, reusing the zoo")


def check_resumable(run_dir: str | Path, config: RunConfig) -> None:
    """Refuse, before any work, a checkpoint in ``run_dir`` that this run cannot continue from:
    another encoder, other sizes, an older or partial format. The encoder is built for the zoo
    the configuration describes (sizes checked first), on the CPU."""
    from wspace.training.emulation import Emulator
    from wspace.training.checkpoint import load_checkpoint
    from wspace.validation import encoder_context_for, restore_checkpoint

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return
    state = load_checkpoint(path)  # a damaged or hostile file stops us here
    context = encoder_context_for(config)
    check_encoder_fits(config.encoder, context, "cpu")
    encoder = build_encoder(config.encoder, context)
    emulator = Emulator.from_config(config.pretrain, context.input_size, context.output_size, config.z_dim)
    parameters = list(encoder.parameters()) + list(emulator.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.pretrain.lr, weight_decay=config.pretrain.weight_decay)
    restore_checkpoint(state, encoder, emulator, optimizer, path)


def _silent(message: str) -> None:
    """The echo of ranks other than 0."""


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=json_default))
    tmp.replace(path)


def _new_run_dir(config: RunConfig) -> Path:
    """A fresh directory ``out_dir/runs/<time>-<encoder>-<task>`` (suffixed if that name is taken)."""
    base = Path(config.out_dir) / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.encoder}-{config.task}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise WspaceError(f"cannot create a run directory next to {base}; clean up {base.parent}")


def read_run_record(run_dir: str | Path) -> dict:
    """run.json of a run directory: its MLflow run id, tracking URI and experiment ({} if absent)."""
    path = Path(run_dir) / RUN_JSON
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WspaceError(f"{path} is damaged ({err}); delete it to continue the run in a new MLflow run") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), (str, type(None)))
                                               for k in ("mlflow_run_id", "tracking_uri", "experiment")):
        raise WspaceError(f"{path} is not a wspace run record; delete it to continue the run in a new MLflow run")
    return record


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The configuration a run directory was started with (its config.json), checked like a
    configuration file: unknown keys and bad values are refused."""
    path = Path(run_dir) / CONFIG_JSON
    if not Path(run_dir).is_dir():
        raise WspaceError(f"no run directory at {run_dir}; pass a directory under OUT_DIR/runs/ to --resume")
    if not path.exists():
        raise WspaceError(f"{run_dir} is not a `wspace run` directory (it has no {CONFIG_JSON}); pass a "
                          f"directory under OUT_DIR/runs/ to --resume, or start a new run")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WspaceError(f"{path} is damaged ({err}); the run cannot be continued: start a new run") from None
    return config_from_dict(raw, str(path))


def resume_config(run_dir: str | Path) -> RunConfig:
    """The configuration to continue ``run_dir`` with: the stored one, its output folder the one
    the run directory is in (runs live in OUT_DIR/runs/<name>)."""
    config = load_run_config(run_dir)
    out_dir = Path(run_dir).resolve().parent.parent
    if Path(config.out_dir).resolve() != out_dir:
        config = attrs.evolve(config, out_dir=str(out_dir))
    return config


def resume_run(run_dir: str | Path, echo: Echo = print, zoo_progress=None, pretrain_progress=None,
               tracking_uri: str | None = None, tracking: bool | None = None) -> dict:
    """Continue the interrupted run in ``run_dir`` with the configuration stored there: the zoo
    is reused (or its build resumed), pretraining continues from the last checkpoint, and
    metrics go to the same MLflow run (``tracking_uri`` overrides the recorded store). A finished
    run is not run again: its results are returned."""
    run_dir = Path(run_dir)
    config = resume_config(run_dir)
    results_path = run_dir / RESULTS_JSON
    if results_path.exists():
        echo(f"run {run_dir} already finished; nothing to continue")
        try:
            return json.loads(results_path.read_text())
        except (OSError, ValueError) as err:
            raise WspaceError(f"{results_path} is damaged ({err}); delete it to redo the evaluation") from None
    record = read_run_record(run_dir)
    from wspace.tracking import Tracker

    enabled = config.tracking if tracking is None else tracking
    uri = tracking_uri or record.get("tracking_uri") or config.tracking_uri
    tracker = Tracker(uri, record.get("experiment") or config.experiment, enabled=enabled)
    return run(config, echo, zoo_progress, pretrain_progress, tracker=tracker, run_dir=run_dir)


def pearson(a, b) -> float:
    """Pearson's correlation of two sequences; NaN when either is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def json_default(value):
    """``json.dumps`` default for numpy scalars and arrays."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def results_table(results: dict) -> str:
    """A short table: validation and OOD emulation loss of the encoder against the baseline."""
    objective = results.get("objective_metric", results["objective"])
    enc, base = results["encoder_result"]["metrics"], results["baseline"]["metrics"]
    info = results["encoder_result"].get("metric_info", {})
    published = [m for m, i in info.items() if i.get("published")]
    lines = []
    for metric in [objective] + [m for m in published if m != objective]:
        notes = (["trained"] if metric == objective else []) + (["as the published code computes it"]
                                                                  if metric in published else [])
        lines += [f"emulation loss {metric} ({'; '.join(notes + ['lower is better'])})",
                  f"{'':18s} {'validation':>12s} {'ood':>12s}"]
        for name, metrics in ((results["encoder"], enc), ("no-information", base)):
            lines.append(f"{name:18s} {metrics['validation'][metric]:12.4f} {metrics['ood'][metric]:12.4f}")
    verdict = "beats" if results["beats_baseline"] else "does NOT beat"
    lines.append(f"{results['encoder']} {verdict} the no-information baseline on validation.")
    fid = results["emulation_fidelity"]
    lines.append(f"emulation fidelity (validation): original performance {fid['original_mean']:.3f}, "
                 f"emulated {fid['emulated_mean']:.3f}, correlation {fid['correlation']:.3f}")
    if results.get("downstream_frozen"):
        lines.append("property prediction from the frozen z (validation / ood half):")
        for prop, splits in results["downstream_frozen"].items():
            key, _ = headline(splits["validation"])
            lines.append(f"  {prop:22s} {key:15s} {splits['validation'][key]:8.4f} / {splits['ood'][key]:8.4f}")
    lines.append(f"run directory: {results['run_dir']}")
    if not results.get("mlflow_run_id") and not results.get("tracking"):
        lines.append("MLflow: tracking was off (--no-tracking); results are in the run directory")
    else:
        where = results.get("tracking") or "not tracked to the end (see the messages above)"
        lines.append(f"MLflow run {results['mlflow_run_id']}: {where}")
    return "\n".join(lines)
