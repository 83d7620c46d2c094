"""`wspace run`: zoo (built or reused by fingerprint) -> emulation pretraining -> evaluation,
against the no-information baseline, all logged to one MLflow run.

``run`` is a sequence of named steps over one ``RunContext``: ensure the zoo, check the encoder,
open the run directory, the baseline, start tracking, pretrain, save the encoder, embeddings and
fidelity, property prediction, results and logging."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import attrs
import torch

from wspace.config import RunConfig, config_from_dict
from wspace.evaluation.downstream import headline, predict_frozen, properties_of
from wspace.evaluation.embeddings import split_embeddings, task_labels
from wspace.evaluation.fidelity import emulation_fidelity, fidelity_summary
from wspace.experiment.baseline import BaselineAlongside, ReadyBaseline, baseline_path, runs_alongside, train_baseline
from wspace.experiment.context import Echo, RunContext
from wspace.experiment.encoder_file import save_encoder
from wspace.experiment.records import metric_keys, result_summary
from wspace.experiment.summary import emulation_sentence
from wspace.experiment.zoos import ensure_zoo
from wspace.files import json_default
from wspace.training.pretrain import PretrainResult, build_encoder, encoder_context, pretrain
from wspace.validation import check_encoder_fits
from wspace_core.registry import WspaceError

#: files of a run directory: its configuration, its MLflow run, its checkpoint, its results
CONFIG_JSON, RUN_JSON, CHECKPOINT, RESULTS_JSON = "config.json", "run.json", "checkpoint.pt", "results.json"


def run(config: RunConfig, echo: Echo = print, zoo_progress=None, pretrain_progress=None,
        tracker=None, run_dir: str | Path | None = None) -> dict:
    """The whole line at the configured preset; returns the results dictionary (also results.json).
    ``run_dir``: continue the run in that directory (its MLflow run, its checkpoint) instead of
    starting a new one; ``resume_run`` is the way in."""
    ctx = RunContext.join(config, echo, zoo_progress, pretrain_progress, tracker)
    resuming = run_dir is not None
    if resuming:  # a checkpoint that cannot be continued fails now, not after the baseline has trained
        check_resumable(run_dir, config)
    ctx.zoo = ensure_zoo(config, ctx.echo, ctx.zoo_progress)
    check_encoder(ctx)
    open_run_dir(ctx, run_dir)
    with _interrupted_in(ctx.run_dir), start_baseline(ctx) as baseline:
        run_id, record = start_tracking(ctx, resuming)
        with run_id, _errors_tagged(ctx.tracker):  # the MLflow run ends FINISHED, FAILED or KILLED
            log_configuration(ctx, record)
            result = pretrain_encoder(ctx, resuming, baseline.progress(ctx.pretrain_progress))
            if not ctx.dist.is_main:  # rank 0 evaluates, plots and logs; every rank returns its results
                return ctx.shared(None)
            baseline = baseline.result()
            ctx.tracker.log_artifact(save_encoder(ctx.run_dir, result, config, ctx.zoo))
            fidelity = plot_embeddings_and_fidelity(ctx, result)
            downstream = predict_properties(ctx, result)
            return log_results(ctx, result, results_of(ctx, result, baseline, fidelity, downstream))


def check_encoder(ctx: RunContext) -> None:
    """A bad encoder option, or one too large for this machine, fails now, not after the baseline has trained."""
    config = ctx.config
    check_encoder_fits(config.encoder.name, encoder_context(ctx.zoo, config.encoder.z_dim, config.preset, config.encoder.options),
                       config.device)


def open_run_dir(ctx: RunContext, run_dir: str | Path | None) -> None:
    """The run directory: the one being continued, or a new one with the configuration in it
    (named by rank 0 for every rank); said, and named in the tracker's warning should its store go away."""
    resuming = run_dir is not None
    if not resuming:
        run_dir = ctx.from_main(lambda: str(_new_run_dir(ctx.config)))  # rank 0's name on every rank
        ctx.write_json(Path(run_dir) / CONFIG_JSON, attrs.asdict(ctx.config))
    ctx.run_dir = Path(run_dir)
    ctx.echo(f"{'continuing' if resuming else 'run directory'} {ctx.run_dir}")
    if getattr(ctx.tracker, "local_dir", False) is None:
        ctx.tracker.local_dir = ctx.run_dir  # named in the warning if the tracking store goes away


@contextmanager
def start_baseline(ctx: RunContext):
    """The no-information floor for this zoo and pretraining configuration: read from its cache,
    trained now, or trained alongside the encoder (``wspace.experiment.baseline``); yields an
    object whose ``result()`` is its summary (cached on disk once known)."""
    config = ctx.config
    path = baseline_path(config, ctx.zoo.fingerprint)
    cached = ctx.from_main(lambda: json.loads(path.read_text()) if path.exists() else None)  # all take rank 0's branch
    if cached is not None:
        ctx.echo(f"reusing the no-information baseline {path}")
        yield ReadyBaseline(cached)
    elif runs_alongside(config, ctx.dist):
        ctx.echo(f"training the no-information baseline (z carries nothing about the network) alongside the "
                 f"encoder, in a worker process with 1 of the {torch.get_num_threads()} torch threads")
        job = BaselineAlongside(ctx.zoo.path, config, lambda summary: ctx.write_json(path, summary))
        try:
            yield job
        finally:
            job.close()
    else:
        ctx.echo("training the no-information baseline (z carries nothing about the network)")
        # scored by rank 0 on the networks the encoder's emulation is scored on (same rows, same draws)
        summary = train_baseline(ctx.zoo, config, ctx.pretrain_progress, score=ctx.dist.is_main)
        ctx.write_json(path, summary)
        yield ReadyBaseline(summary)


def start_tracking(ctx: RunContext, resuming: bool):
    """Start the run's MLflow run, or continue the one its run.json records when the store is the
    same; run.json records it. Returns its id (a context manager that ends it) and the record."""
    config, tracker, run_dir = ctx.config, ctx.tracker, ctx.run_dir
    record = read_run_record(run_dir) if resuming else {}
    same_store = record.get("tracking_uri") == tracker.uri and record.get("experiment") == tracker.experiment
    resume_id = record.get("mlflow_run_id") if same_store and ctx.tracking else None
    if record.get("mlflow_run_id") and ctx.tracking and not resume_id:
        ctx.echo(f"the run was tracked at {record.get('tracking_uri')}; logging the rest to a new MLflow run "
                 f"at {tracker.uri}")
    run_id = tracker.start_run(
        f"{config.encoder.name}-{config.task}",
        tags={"arch": config.arch, "task": config.task, "encoder": config.encoder.name,
              "zoo_fingerprint": ctx.zoo.fingerprint, "preset": config.preset},
        **({"run_id": resume_id} if resume_id else {}),
    )
    ctx.mlflow_run_id = run_id
    if ctx.tracking or not record:  # an untracked continuation keeps the record of the tracked run
        record = {"mlflow_run_id": str(run_id) or None, "tracking_uri": tracker.uri, "experiment": tracker.experiment,
                  "params_logged": bool(resume_id and record.get("params_logged"))}
        ctx.write_json(run_dir / RUN_JSON, record)
    return run_id, record


def log_configuration(ctx: RunContext, record: dict) -> None:
    """The configuration as the MLflow run's parameters and config.json as its artifact, once per
    MLflow run (parameters are immutable); run.json notes it."""
    if not ctx.tracking or record.get("params_logged"):
        return
    ctx.tracker.log_params(attrs.asdict(ctx.config))
    ctx.tracker.log_artifact(ctx.run_dir / CONFIG_JSON)
    if ctx.tracking:
        ctx.write_json(ctx.run_dir / RUN_JSON, {**record, "params_logged": True})


def pretrain_encoder(ctx: RunContext, resuming: bool, progress=None) -> PretrainResult:
    """Pretrain the encoder by emulation, from the run's last checkpoint when continuing one;
    ``progress`` is told of every step."""
    config, run_dir = ctx.config, ctx.run_dir
    checkpoint_found = bool(ctx.shared(resuming and (run_dir / CHECKPOINT).exists()))
    if checkpoint_found:
        ctx.echo(f"pretraining {config.encoder.name} from its last checkpoint ({config.pretrain.steps} steps at most)")
    else:
        ctx.echo(f"pretraining {config.encoder.name} by emulation ({config.pretrain.steps} steps at most)")
    return pretrain(
        ctx.zoo, config.encoder.name, config.pretrain, z_dim=config.encoder.z_dim, preset=config.preset,
        encoder_options=config.encoder.options, seed=config.seed, device=config.device,
        checkpoint_dir=run_dir, resume=checkpoint_found, log_metrics=ctx.tracker.log_metrics,
        progress=progress,
    )


def plot_embeddings_and_fidelity(ctx: RunContext, result: PretrainResult) -> dict:
    """The z of the validation networks plotted by task and by performance, and the emulation
    fidelity on them (plotted); the plots are logged. Returns the fidelity."""
    from wspace.reporting import plots

    config, zoo, run_dir = ctx.config, ctx.zoo, ctx.run_dir
    rows, z = split_embeddings(result.encoder, zoo, "validation", config.device)
    perf = zoo.metadata[zoo.task_family().metric_columns[0]][rows]
    plot_paths = [
        plots.embedding_plot(z, task_labels(zoo, rows), f"{config.encoder.name}: z of validation networks",
                             run_dir / "embedding_by_task.png", color_label="task"),
        plots.embedding_plot(z, perf, f"{config.encoder.name}: z of validation networks",
                             run_dir / "embedding_by_performance.png", color_label="performance"),
    ]
    fidelity = emulation_fidelity(result, zoo, "validation", config.device, seed=config.seed)
    plot_paths.append(plots.fidelity_plot(fidelity["original"], fidelity["emulated"],
                                          run_dir / "emulation_fidelity.png",
                                          f"{config.encoder.name}: emulation fidelity (validation)"))
    for path in plot_paths:
        ctx.tracker.log_artifact(path, "plots")
    return fidelity


def predict_properties(ctx: RunContext, result: PretrainResult) -> dict:
    """Property prediction from the frozen z (logged): {property: {split: metrics}}."""
    config, zoo = ctx.config, ctx.zoo
    ctx.echo("predicting properties from the frozen z")
    downstream = predict_frozen(result.encoder, zoo, properties_of(zoo),
                                config.downstream, seed=config.seed, device=config.device)
    ctx.tracker.log_metrics(metric_keys("downstream", downstream), result.best_step)
    return downstream


def results_of(ctx: RunContext, result: PretrainResult, baseline: dict, fidelity: dict, downstream: dict) -> dict:
    """The results dictionary (results.json) of the run's figures."""
    config, zoo = ctx.config, ctx.zoo
    objective = result.objective_metric
    return {
        "encoder": config.encoder.name, "task": config.task, "arch": config.arch, "preset": config.preset,
        "zoo": str(zoo.path), "zoo_fingerprint": zoo.fingerprint, "objective": config.pretrain.objective,
        "loss_positions": config.pretrain.loss_positions, "objective_metric": objective,
        "encoder_result": result_summary(result), "baseline": baseline,
        "emulation_fidelity": fidelity_summary(fidelity),
        "downstream_frozen": downstream,
        "beats_baseline": result.metrics["validation"][objective] < baseline["metrics"]["validation"][objective],
        "run_dir": str(ctx.run_dir), "mlflow_run_id": ctx.mlflow_run_id, "seconds": time.perf_counter() - ctx.started,
    }


def log_results(ctx: RunContext, result: PretrainResult, results: dict) -> dict:
    """Log the best and the baseline's figures, write results.json (logged too); under torchrun
    the other ranks get these results, as plain JSON data. Returns them with where they are tracked."""
    tracker = ctx.tracker
    tracker.log_metrics(metric_keys("best", result.metrics), result.best_step)
    tracker.log_metrics(metric_keys("baseline", results["baseline"]["metrics"]), 0)
    ctx.write_json(ctx.run_dir / RESULTS_JSON, results)
    tracker.log_artifact(ctx.run_dir / RESULTS_JSON)
    results["tracking"] = tracker.run_url_or_path()
    if ctx.dist.enabled:
        ctx.shared(json.loads(json.dumps(results, default=json_default)))
    return results


@contextmanager
def _interrupted_in(run_dir: Path):
    """A Ctrl-C carries ``run_dir``: what the interrupted run leaves is told from its directory."""
    try:
        yield
    except KeyboardInterrupt as err:
        err.run_dir = run_dir
        raise


@contextmanager
def _errors_tagged(tracker):
    """An error of ours (e.g. a diverged pretraining) is said in the MLflow run too."""
    try:
        yield
    except WspaceError as err:
        tracker.set_tags({"wspace.error": str(err)})
        raise


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
    check_encoder_fits(config.encoder.name, context, "cpu")
    encoder = build_encoder(config.encoder.name, context)
    emulator = Emulator.from_config(config.pretrain, context.input_size, context.output_size, config.encoder.z_dim)
    parameters = list(encoder.parameters()) + list(emulator.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.pretrain.lr, weight_decay=config.pretrain.weight_decay)
    restore_checkpoint(state, encoder, emulator, optimizer, path)


def _new_run_dir(config: RunConfig) -> Path:
    """A fresh directory ``out_dir/runs/<time>-<encoder>-<task>`` (suffixed if that name is taken)."""
    base = Path(config.out_dir) / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.encoder.name}-{config.task}"
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
    lines += _good_networks_lines(fid, (results["baseline"].get("emulation_fidelity") or {}))
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
    lines.append(emulation_sentence(results))
    return "\n".join(lines)


def _good_networks_lines(fid: dict, baseline: dict) -> list[str]:
    """The fidelity on the networks that work (original performance ≥ the threshold), the
    encoder's emulation beside the no-information baseline's on the same networks."""
    good = fid.get("good")
    if not good or not good["networks"]:
        return []
    line = (f"  on the {good['networks']} networks performing ≥ {good['threshold']:g}: original "
            f"{good['original_mean']:.3f}, emulated {good['emulated_mean']:.3f}")
    base = baseline.get("good")
    if base and base["networks"]:
        line += f", no-information baseline emulated {base['emulated_mean']:.3f}"
    return [line]
