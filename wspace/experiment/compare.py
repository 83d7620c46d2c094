"""`wspace compare`: every encoder and the no-information baseline, for several seeds, on one zoo,
under one parent MLflow run with a child run each; the paper's comparisons as a report directory.

For each seed and encoder: emulation pretraining (``pretrain``), then for the encoders (not the
baseline) emulation fidelity, property prediction from the frozen z and, unless skipped, the
supervised baseline (the same encoder trained end to end). On the CPU these child runs train
``workers`` at a time, each in a spawned single-threaded worker process (``CompareConfig.workers``,
default one per core): a small model's steps keep two threads far less busy than two processes
keep one each. The parent process alone tracks: it opens a finished run's MLflow child run and
logs its metrics then (on an accelerator, or with ``workers=1``, each child run trains in this
process, logged live). What changes between the two is float rounding alone (a torch thread count
sums in a different order); every run draws from its own seeded generators.

With the first seed's encoders: the embedding plots, the probing inputs of the probing encoders,
and the hidden-neuron permutation table (trained and freshly initialised encoders). Figures over
seeds are means with percentile-bootstrap intervals (``wspace.reporting.statistics.bootstrap_ci``).

The report directory holds report.md, results.json, runs.json (each finished child run, written
as they finish) and plots/; it is also logged as artifacts of the parent run.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import attrs
import numpy as np
import torch

from wspace.config import RunConfig
from wspace.evaluation.downstream import headline, predict_frozen, predict_supervised, properties_of
from wspace.evaluation.embeddings import split_embeddings, task_labels
from wspace.evaluation.fidelity import emulation_fidelity, fidelity_summary
from wspace.evaluation.permutation_table import incomplete_summary, permutation_table, pick_networks
from wspace.experiment.context import Echo, RunContext
from wspace.experiment.encoder_file import save_encoder
from wspace.experiment.records import metric_keys, result_summary
from wspace.experiment.zoos import ensure_zoo
from wspace.files import finite, write_json_atomic
from wspace.reporting.claims import ordering_vs_paper
from wspace.reporting.markdown import render_markdown
from wspace.reporting.statistics import bootstrap_ci, interval_dict
from wspace.reporting.roles import baseline_encoder
from wspace.training.pretrain import PretrainResult, build_encoder, encoder_context, pretrain
from wspace.validation import check_seed
import wspace.workers as workers_module
from wspace.workers import LOST_CHECK_S, TaskPids, default_workers, start_worker
from wspace_core import plugins
from wspace_core.encoder import BlackBox, FunctionalistEncoder
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS

__all__ = ["CompareConfig", "aggregate_runs", "bootstrap_ci", "compare", "encoder_options_for", "parse_encoders",
           "parse_seeds", "rebuild_report"]


def _names(value) -> tuple[str, ...]:
    return tuple(value)


def _check_encoders(instance, attribute, value):
    if not value:
        raise WspaceError("compare needs at least one encoder (--encoders)")
    if len(set(value)) != len(value):
        raise WspaceError(f"--encoders names an encoder twice: {', '.join(value)}")
    baseline = baseline_encoder()
    if baseline in value:
        raise WspaceError(f"{baseline!r} always runs as the baseline; leave it out of --encoders")


def _check_seeds(instance, attribute, value):
    if not value:
        raise WspaceError("compare needs at least one seed (--seeds)")
    if len(set(value)) != len(value):
        raise WspaceError(f"--seeds repeats a seed: {', '.join(map(str, value))}")


def _positive(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WspaceError(f"{attribute.name} must be a positive integer, got {value!r}")


def _positive_or_none(instance, attribute, value):
    if value is not None:
        _positive(instance, attribute, value)


@attrs.frozen
class CompareConfig:
    """A comparison: the run settings shared by every encoder, which encoders, which seeds."""

    run: RunConfig
    encoders: tuple[str, ...] = attrs.field(converter=_names, validator=_check_encoders)
    seeds: tuple[int, ...] = attrs.field(converter=_names, validator=_check_seeds)
    report_dir: str = "wspace_report"
    skip_supervised: bool = False
    #: validation networks whose probing inputs are drawn (probing encoders)
    probe_networks: int = attrs.field(default=4, validator=_positive)
    #: networks in the permutation table
    permutation_networks: int = attrs.field(default=32, validator=_positive)
    #: the command line that started it, recorded in report.md
    command: str = ""
    #: child runs trained at once, each in a single-threaded worker process (None:
    #: ``wspace.workers.default_workers``, one per CPU core; 1: one after another in this process)
    workers: int | None = attrs.field(default=None, validator=_positive_or_none)

    def resolved_workers(self) -> int:
        """The worker processes this comparison uses: never more than it has child runs."""
        jobs = (len(self.encoders) + 1) * len(self.seeds)
        wanted = default_workers(self.run.device) if self.workers is None else self.workers
        return max(1, min(wanted, jobs))


def parse_encoders(spec: str) -> tuple[str, ...]:
    """ "all" (every registered encoder but the baseline) or a comma list of registered names."""
    registry = plugins.encoders()
    if spec.strip().lower() == "all":
        baseline = baseline_encoder()
        return tuple(n for n in registry.names() if n != baseline)
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for name in names:
        registry.get(name)  # unknown names fail with the registered ones listed
    return names


def parse_seeds(spec: str | int, first: int = 0) -> tuple[int, ...]:
    """ "3" -> (first, first+1, first+2); "0,4,9" -> those seeds."""
    text = str(spec).strip()
    try:
        if "," in text:
            return tuple(check_seed(int(s), "every one of --seeds") for s in text.split(",") if s.strip())
        count = int(text)
    except ValueError:
        raise WspaceError(f"--seeds takes a number of seeds or a comma list of seeds, got {spec!r}") from None
    if count < 1:
        raise WspaceError(f"--seeds must be at least 1, got {count}")
    seeds = tuple(range(first, first + count))
    check_seed(seeds[-1], f"the last of {count} seeds from --seed {first}")
    return seeds


def encoder_options_for(name: str, options: dict) -> dict:
    """The options that apply to encoder ``name``: ``ENCODER.KEY`` keys for that encoder, plain
    keys for every encoder; ``probing_strategy`` only for functionalist encoders."""
    if name == baseline_encoder():
        return {}
    functionalist = issubclass(plugins.encoders().get(name), FunctionalistEncoder)
    out = {}
    for key, value in options.items():
        prefix, _, rest = key.partition(".")
        if rest:
            if prefix == name:
                out[rest] = value
            continue
        if key == "probing_strategy" and not functionalist:
            continue
        out[key] = value
    return out


# ---- one child run ----------------------------------------------------------------------------

@attrs.define
class _Outcome:
    record: dict
    result: PretrainResult
    fidelity: dict | None


def _child(ctx: RunContext, name: str, seed: int) -> RunContext:
    """The context of encoder ``name``'s run with ``seed``: its options, its run directory."""
    options = encoder_options_for(name, ctx.config.encoder.options)
    return ctx.child(ctx.run_dir / f"{name}-seed{seed}", seed=seed,
                     encoder=attrs.evolve(ctx.config.encoder, name=name, options=options))


def _train(child: RunContext, skip_supervised: bool, log_metrics) -> _Outcome:
    """Pretrain the child's encoder and evaluate it (the baseline: its chance level); nothing is
    tracked here but the pretraining's metrics (``log_metrics``)."""
    run_cfg, zoo = child.config, child.zoo
    name, seed, options = run_cfg.encoder.name, run_cfg.seed, run_cfg.encoder.options
    result = pretrain(zoo, name, run_cfg.pretrain, z_dim=run_cfg.encoder.z_dim, preset=run_cfg.preset,
                      encoder_options=options, seed=seed, device=run_cfg.device,
                      log_metrics=log_metrics, progress=child.pretrain_progress)
    is_baseline = name == baseline_encoder()
    record = {"encoder": name, "seed": seed, "kind": "baseline" if is_baseline else result.encoder.kind,
              "encoder_options": options, "pretrain": result_summary(result), "mlflow_run_id": None}
    fidelity = None
    if is_baseline:
        _evaluate_baseline(child, result, record)
    else:
        fidelity = _evaluate_encoder(child, result, record, skip_supervised)
    return _Outcome(record, result, fidelity)


@contextmanager
def _child_run(child: RunContext, parent_id: str):
    """The child's MLflow run under the parent, its parameters logged; yields its id."""
    run_cfg, name = child.config, child.config.encoder.name
    with child.tracker.start_run(f"{name}-seed{run_cfg.seed}", parent_run_id=parent_id,
                                 tags={"arch": run_cfg.arch, "task": run_cfg.task, "encoder": name,
                                       "seed": run_cfg.seed, "zoo_fingerprint": child.zoo.fingerprint,
                                       "preset": run_cfg.preset,
                                       "baseline": name == baseline_encoder()}) as child_id:
        child.tracker.log_params(attrs.asdict(run_cfg))
        yield child_id


def _log_outcome(child: RunContext, outcome: _Outcome, child_id: str) -> None:
    """Into the open child run: the best state's metrics and the evaluation's, its encoder.pt
    (loadable by `wspace predict --run <child run id or dir>`) and its record."""
    result, record = outcome.result, outcome.record
    record["mlflow_run_id"] = str(child_id) or None
    metrics = metric_keys("best", result.metrics)
    for key, prefix in (("emulation_fidelity", "fidelity"), ("downstream_frozen", "downstream_frozen"),
                        ("downstream_supervised", "downstream_supervised")):
        metrics.update(metric_keys(prefix, record.get(key, {})))
    child.tracker.log_metrics(metrics, result.best_step)
    child.run_dir.mkdir(parents=True, exist_ok=True)
    child.tracker.log_artifact(save_encoder(child.run_dir, result, child.config, child.zoo))
    child.tracker.log_dict(finite(record), "results.json")


def _run_one(ctx: RunContext, name: str, seed: int, config: CompareConfig, parent_id: str) -> _Outcome:
    """One child run in this process: its MLflow run open while it trains (metrics logged live)."""
    child = _child(ctx, name, seed)
    with _child_run(child, parent_id) as child_id:
        outcome = _train(child, config.skip_supervised, child.tracker.log_metrics)
        _log_outcome(child, outcome, child_id)
    return outcome


def _log_finished(ctx: RunContext, name: str, seed: int, parent_id: str, outcome: _Outcome,
                  logged: list[tuple[dict, int]]) -> None:
    """A run finished in a worker: its MLflow child run opened now, its pretraining metrics replayed
    at their steps, then what ``_log_outcome`` logs."""
    child = _child(ctx, name, seed)
    with _child_run(child, parent_id) as child_id:
        for metrics, step in logged:
            child.tracker.log_metrics(metrics, step)
        _log_outcome(child, outcome, child_id)


def _worker_echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train_in_worker(job: tuple[int, str, str, RunConfig, bool, str]) -> tuple[int, _Outcome, list]:
    """A worker process's child run: the zoo opened from its path, the metrics kept to be logged
    by the parent. Returns the job's index with the outcome."""
    from wspace.zoo.store import Zoo

    index, zoo_path, run_dir, run_cfg, skip_supervised, label = job
    workers_module.task_pids.started(index)
    child = RunContext(run_cfg, tracker=None, echo=_worker_echo, zoo=Zoo.open(zoo_path, verify=False),
                       run_dir=Path(run_dir))
    logged: list[tuple[dict, int]] = []
    _worker_echo(f"{label} started")
    outcome = _train(child, skip_supervised, lambda metrics, step: logged.append((dict(metrics), step)))
    workers_module.task_pids.done(index)
    return index, outcome, logged


def _evaluate_baseline(child: RunContext, result: PretrainResult, record: dict) -> None:
    """A head on a z that carries nothing: the chance level of every property (into ``record``)."""
    run_cfg, zoo = child.config, child.zoo
    child.echo(f"  {run_cfg.encoder.name} seed {run_cfg.seed}: property prediction (the chance level)")
    record["downstream_frozen"] = predict_frozen(result.encoder, zoo, properties_of(zoo),
                                                 run_cfg.downstream, seed=run_cfg.seed,
                                                 device=run_cfg.device)


def _evaluate_encoder(child: RunContext, result: PretrainResult, record: dict, skip_supervised: bool) -> dict:
    """Emulation fidelity, property prediction from the frozen z and, unless skipped, the
    supervised baseline (into ``record``). Returns the fidelity."""
    run_cfg, zoo = child.config, child.zoo
    name, seed = run_cfg.encoder.name, run_cfg.seed
    specs, dcfg = properties_of(zoo), run_cfg.downstream
    child.echo(f"  {name} seed {seed}: emulation fidelity, property prediction")
    fidelity = emulation_fidelity(result, zoo, "validation", run_cfg.device, seed=seed)
    record["emulation_fidelity"] = fidelity_summary(fidelity)
    record["downstream_frozen"] = predict_frozen(result.encoder, zoo, specs, dcfg, seed=seed, device=run_cfg.device)
    if not skip_supervised:
        child.echo(f"  {name} seed {seed}: supervised baseline (trained end to end)")
        record["downstream_supervised"] = {
            spec.name: predict_supervised(name, zoo, spec, dcfg, z_dim=run_cfg.encoder.z_dim, preset=run_cfg.preset,
                                          encoder_options=run_cfg.encoder.options, seed=seed, device=run_cfg.device)
            for spec in specs}
    return fidelity


# ---- aggregation ------------------------------------------------------------------------------

def aggregate_runs(records: list[dict], encoders: list[str], seed: int) -> dict:
    """Every figure of the runs (runs.json records) as mean and 95% bootstrap interval over seeds:
    emulation losses, fidelity, and per property the headline metric (``encoders``) and the head's
    other figures (``details``)."""
    by_encoder = {e: [r for r in records if r["encoder"] == e] for e in encoders}
    emulation = {}
    for enc, runs in by_encoder.items():
        if not runs:
            continue
        metrics = runs[0]["pretrain"]["metrics"]
        emulation[enc] = {split: {m: interval_dict([r["pretrain"]["metrics"][split][m] for r in runs], seed)
                                  for m in metrics[split]} for split in metrics}
    fidelity = {enc: {k: interval_dict([r["emulation_fidelity"][k] for r in runs], seed)
                      for k in ("correlation", "original_mean", "emulated_mean")}
                for enc, runs in by_encoder.items() if runs and "emulation_fidelity" in runs[0]}
    downstream: dict = {}
    for enc, runs in by_encoder.items():
        if not runs or "downstream_frozen" not in runs[0]:
            continue
        for prop, splits in runs[0]["downstream_frozen"].items():
            metric, _ = headline(splits["validation"])
            entry = downstream.setdefault(prop, {"metric": metric, "encoders": {}, "details": {}})
            settings, details = {}, {}
            for setting in ("frozen", "supervised"):
                key = f"downstream_{setting}"
                if key in runs[0] and prop in runs[0][key]:
                    settings[setting] = {split: interval_dict([r[key][prop][split][metric] for r in runs], seed)
                                         for split in ("train", "validation", "ood")}
                    # every other figure the head reports (per-offset accuracies, MAE, ...), loss aside
                    details[setting] = {split: {m: interval_dict([r[key][prop][split][m] for r in runs], seed)
                                                for m in runs[0][key][prop][split] if m not in ("loss", metric)}
                                        for split in ("validation", "ood")}
            entry["encoders"][enc] = settings
            entry["details"][enc] = details
    return {"emulation": emulation, "fidelity": fidelity, "downstream": downstream}


# ---- figures of the first seed -----------------------------------------------------------------

def _probe_plots(zoo, encoders: dict[str, torch.nn.Module], config: CompareConfig, plot_dir: Path) -> dict[str, str]:
    """Heatmaps of the probes the trained probing encoders send to a few validation networks."""
    from wspace.reporting.paper import PROBING
    from wspace.reporting.plots import probe_heatmap

    probing = {n: e for n, e in encoders.items() if e.role in PROBING}
    if not probing:
        return {}
    arch, task = zoo.architecture(), zoo.task_family()
    rows, _ = pick_networks(zoo, "validation", config.probe_networks, snapshot=-1)
    device = torch.device(config.run.device)
    params = arch.layout.unflatten(torch.from_numpy(np.asarray(zoo.weights[rows], dtype=np.float32)).to(device))
    meta = zoo.metadata
    first = task.metric_columns[0]
    labels = [", ".join(f"{c}={meta[c][r]:g}" for c in task.task_columns) + f"\n{first} {meta[first][r]:.2f}"
              for r in rows]
    out = {}
    for name, encoder in probing.items():
        encoder.eval()
        with torch.no_grad():
            trace = encoder.trace(BlackBox(arch, params, task.input_kind, task.output_kind))
        encoder.train()
        out[name] = str(probe_heatmap(trace.probes.cpu().numpy(), plot_dir / f"probes_{name}.png",
                                      f"{name}: probing inputs (validation networks)", labels))
    return out


def _embedding_plots(zoo, results: dict[str, PretrainResult], device: str, plot_dir: Path) -> tuple[dict, dict]:
    from wspace.reporting import plots

    perf_column = zoo.task_family().metric_columns[0]
    out = {}
    for name, result in results.items():
        rows, z = split_embeddings(result.encoder, zoo, "validation", device)
        labels, perf = task_labels(zoo, rows), zoo.metadata[perf_column][rows]
        out[name] = {
            "task": str(plots.embedding_plot(z, labels, f"{name}: z of validation networks",
                                             plot_dir / f"embedding_{name}_by_task.png", color_label="task",
                                             categorical=True)),
            "performance": str(plots.embedding_plot(z, perf, f"{name}: z of validation networks",
                                                    plot_dir / f"embedding_{name}_by_performance.png",
                                                    color_label=perf_column, categorical=False)),
        }
    rows = np.asarray(zoo.rows(split="validation"))
    weights = np.asarray(zoo.weights[np.sort(rows)], dtype=np.float32)  # (V, P)
    labels, perf = task_labels(zoo, np.sort(rows)), zoo.metadata[perf_column][np.sort(rows)]
    raw = {
        "task": str(plots.tsne_or_pca_plot(weights, labels, "raw flattened weights of validation networks",
                                           plot_dir / "raw_weights_by_task.png", color_label="task",
                                           categorical=True)),
        "performance": str(plots.tsne_or_pca_plot(weights, perf, "raw flattened weights of validation networks",
                                                  plot_dir / "raw_weights_by_performance.png",
                                                  color_label=perf_column, categorical=False)),
    }
    return out, raw


# ---- the comparison ---------------------------------------------------------------------------

def _zoo_summary(zoo) -> dict:
    return {"path": str(zoo.path), "fingerprint": zoo.fingerprint, "num_models": zoo.num_models,
            "rows_per_model": zoo.rows_per_model, "num_rows": zoo.num_rows,
            "snapshot_steps": zoo.snapshot_steps, "num_params": int(zoo.weights.shape[1]),
            "rows_per_split": {s: int(len(zoo.rows(split=s))) for s in SPLITS}}


def _versions() -> dict:
    from wspace_core import __version__

    return {"wspace": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__}


def compare(config: CompareConfig, echo: Echo = print, zoo_progress=None, pretrain_progress=None,
            tracker=None) -> dict:
    """Run the comparison and write its report directory; returns the results (= results.json)."""
    ctx, report_dir = _start(config, echo, zoo_progress, pretrain_progress, tracker)
    run_cfg, zoo = ctx.config, ctx.zoo
    with ctx.tracker.start_run(f"compare-{run_cfg.arch}-{run_cfg.task}",
                               tags={"arch": run_cfg.arch, "task": run_cfg.task, "kind": "compare",
                                     "encoders": ",".join(config.encoders), "preset": run_cfg.preset,
                                     "zoo_fingerprint": zoo.fingerprint}) as parent_id:
        ctx.tracker.log_params({"compare": {"encoders": list(config.encoders), "seeds": list(config.seeds),
                                            "skip_supervised": config.skip_supervised,
                                            "probe_networks": config.probe_networks,
                                            "permutation_networks": config.permutation_networks,
                                            "workers": config.resolved_workers()},
                                "run": attrs.asdict(run_cfg)})
        records, first = _run_all(ctx, config, parent_id, report_dir)
        echo("aggregating over seeds; figures of the first seed's encoders")
        results = _results(config, zoo, records)
        results["plots"] = _plots(ctx, config, results, first, report_dir / "plots")
        echo("hidden-neuron permutation table (untrained and trained encoders)")
        results["permutation"] = _permutation(ctx, config, {n: o.result.encoder for n, o in first.items()})
        results["ordering"] = ordering_vs_paper(results)
        results["mlflow"] = {"parent_run_id": str(parent_id) or None,
                             "tracking": ctx.tracker.run_url_or_path(parent_id)}
        results["seconds"] = time.perf_counter() - ctx.started
        _finish(ctx, results, report_dir)
        return results


def _start(config: CompareConfig, echo: Echo, zoo_progress, pretrain_progress, tracker) -> tuple[RunContext, Path]:
    """The comparison's context (its zoo ensured, the task family's properties checked before any
    training; child runs under OUT_DIR/runs/<time>-compare-<task>) and its report directory."""
    from wspace.tracking import Tracker

    started = time.perf_counter()
    run_cfg = config.run
    report_dir = Path(config.report_dir)
    (report_dir / "plots").mkdir(parents=True, exist_ok=True)
    tracker = tracker or Tracker(run_cfg.tracking_uri, run_cfg.experiment, enabled=run_cfg.tracking,
                                 local_dir=report_dir)
    zoo = ensure_zoo(run_cfg, echo, zoo_progress)
    properties_of(zoo)  # the task family's properties exist before any training
    work_dir = Path(run_cfg.out_dir) / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{run_cfg.task}"
    ctx = RunContext(run_cfg, tracker, echo, zoo_progress, pretrain_progress, zoo=zoo, run_dir=work_dir,
                     started=started)
    return ctx, report_dir


def _run_all(ctx: RunContext, config: CompareConfig, parent_id: str,
             report_dir: Path) -> tuple[list[dict], dict[str, _Outcome]]:
    """Every encoder after the baseline, for each seed: the records in that order (runs.json,
    written as each run finishes) and the outcomes of the first seed's encoders."""
    baseline = baseline_encoder()
    jobs = [(seed, name) for seed in config.seeds for name in (baseline, *config.encoders)]
    workers = config.resolved_workers()
    finished: dict[int, _Outcome] = {}

    def done(index: int, outcome: _Outcome) -> None:
        finished[index] = outcome
        write_json_atomic(report_dir / "runs.json", [finished[i].record for i in sorted(finished)], strict=True)

    if workers == 1:
        for index, (seed, name) in enumerate(jobs):
            ctx.echo(f"[{index + 1}/{len(jobs)}] seed {seed}: pretraining {name} by emulation "
                     f"({ctx.config.pretrain.steps} steps at most)")
            done(index, _run_one(ctx, name, seed, config, parent_id))
    else:
        ctx.echo(f"{len(jobs)} child runs, {workers} at a time in single-threaded worker processes "
                 f"({ctx.config.pretrain.steps} pretraining steps at most each)")
        tasks = [_worker_task(ctx, config, jobs, index) for index in range(len(jobs))]
        with _worker_pool(workers, len(jobs)) as (pool, pids):  # jobs handed out in order
            results = pool.imap_unordered(_train_in_worker, tasks, chunksize=1)
            for index, outcome, logged in _as_they_finish(results, pids, tasks, finished):
                seed, name = jobs[index]
                _log_finished(ctx, name, seed, parent_id, outcome, logged)
                done(index, outcome)
                ctx.echo(f"[{len(finished)}/{len(jobs)}] seed {seed}: {name} done "
                         f"({outcome.result.seconds:.0f} s pretraining)")
    outcomes = [finished[i] for i in range(len(jobs))]
    first = {name: outcome for (seed, name), outcome in zip(jobs, outcomes)
             if seed == config.seeds[0] and name != baseline}
    return [o.record for o in outcomes], first


def _worker_task(ctx: RunContext, config: CompareConfig, jobs: list[tuple[int, str]], index: int) -> tuple:
    """What a worker needs for job ``index``: plain data (the zoo by its path), no callbacks."""
    seed, name = jobs[index]
    child = _child(ctx, name, seed)
    return (index, str(ctx.zoo.path), str(child.run_dir), child.config, config.skip_supervised,
            f"[{index + 1}/{len(jobs)}] seed {seed}: pretraining {name} by emulation")


@contextmanager
def _worker_pool(workers: int, tasks: int):
    """``workers`` spawned single-threaded processes (Ctrl-C left to this one) and the table of
    which runs which task, stopped on any exit: the comparison done, a worker's error raised
    here, Ctrl-C."""
    context = mp.get_context("spawn")
    pids = TaskPids(context, tasks)
    pool = context.Pool(workers, initializer=start_worker, initargs=(os.getpid(), pids))
    try:
        yield pool, pids
    finally:
        pool.terminate()
        pool.join()


def _as_they_finish(results, pids: TaskPids, tasks: list[tuple], finished: dict):
    """The workers' results as they come; a run whose worker process died without one (killed
    outright: the OOM killer, SIGKILL) is an error here, not a wait forever."""
    while len(finished) < len(tasks):
        try:
            item = results.next(timeout=LOST_CHECK_S)
        except mp.TimeoutError:
            lost = pids.check(i for i in range(len(tasks)) if i not in finished)
            if lost is not None:
                raise WspaceError(f"{tasks[lost][-1]}: its worker process ended without a result (killed, or "
                                  f"out of memory?); nothing of that run was kept. Run again, with fewer --workers "
                                  f"if memory is short") from None
            continue
        yield item


def _results(config: CompareConfig, zoo, records: list[dict]) -> dict:
    """The comparison's settings, its runs, and their figures over seeds."""
    run_cfg = config.run
    names = [baseline_encoder(), *config.encoders]
    results = {
        "command": config.command or f"wspace compare --encoders {','.join(config.encoders)}",
        "versions": _versions(), "arch": run_cfg.arch, "task": run_cfg.task, "preset": run_cfg.preset,
        "device": run_cfg.device, "objective": run_cfg.pretrain.objective,
        "loss_positions": run_cfg.pretrain.loss_positions, "zoo": _zoo_summary(zoo),
        "objective_metric": records[0]["pretrain"]["objective_metric"],
        "metric_info": records[0]["pretrain"]["metric_info"],
        "encoders": names, "kinds": {r["encoder"]: r["kind"] for r in records},
        "seeds": list(config.seeds), "skip_supervised": config.skip_supervised, "config": attrs.asdict(config),
        "workers": config.resolved_workers(),
        "runs": records,
    }
    results.update(aggregate_runs(records, names, seed=run_cfg.seed))
    results["emulation_metrics"] = sorted(next(iter(results["emulation"].values()))["validation"])
    return results


def _plots(ctx: RunContext, config: CompareConfig, results: dict, first: dict[str, _Outcome], plot_dir: Path) -> dict:
    """The figures: fidelity, property bars, embeddings, raw weights, probes and loss curves (first seed)."""
    from wspace.reporting import plots

    seed = config.seeds[0]
    plot_paths: dict = {"fidelity": {
        name: str(plots.fidelity_plot(o.fidelity["original"], o.fidelity["emulated"], plot_dir / f"fidelity_{name}.png",
                                      f"{name}: emulation fidelity (validation, seed {seed})"))
        for name, o in first.items()}}
    plot_paths["downstream"] = _downstream_plots(results, plot_dir)
    plot_paths["embeddings"], plot_paths["raw_weights"] = _embedding_plots(
        ctx.zoo, {n: o.result for n, o in first.items()}, ctx.config.device, plot_dir)
    plot_paths["probes"] = _probe_plots(ctx.zoo, {n: o.result.encoder for n, o in first.items()}, config, plot_dir)
    objective_key = f"validation/{results['objective_metric']}"
    curves = {n: ([h["step"] for h in o.result.history], [h[objective_key] for h in o.result.history])
              for n, o in first.items()}
    plot_paths["loss_curves"] = str(plots.loss_curve_plot(
        curves, plot_dir / "pretraining_validation_loss.png",
        f"validation emulation loss (seed {seed})", ylabel=results["objective_metric"]))
    return plot_paths


def _downstream_plots(results: dict, plot_dir: Path) -> dict[str, str]:
    """A bar plot per property: pretrained vs supervised, each encoder."""
    from wspace.reporting.plots import downstream_bar_plot

    return {prop: str(downstream_bar_plot(entry["encoders"], entry["metric"], plot_dir / f"downstream_{prop}.png",
                                          f"{prop}: pretrained vs supervised"))
            for prop, entry in results["downstream"].items()}


def _permutation(ctx: RunContext, config: CompareConfig, trained: dict[str, torch.nn.Module]) -> dict:
    """The hidden-neuron permutation table of each encoder freshly initialised and trained (first seed)."""
    run_cfg = ctx.config
    encoders_for_table = {}
    context = encoder_context(ctx.zoo, run_cfg.encoder.z_dim, run_cfg.preset)
    for name in config.encoders:
        torch.manual_seed(config.seeds[0])
        options = encoder_options_for(name, run_cfg.encoder.options)
        fresh = build_encoder(name, attrs.evolve(context, options=options)).to(torch.device(run_cfg.device))
        encoders_for_table[f"{name} (untrained)"] = fresh
        encoders_for_table[f"{name} (trained)"] = trained[name]
    table = permutation_table(ctx.zoo, encoders_for_table, num_networks=config.permutation_networks,
                              seed=config.seeds[0], device=run_cfg.device)
    table["incomplete"] = {name: incomplete_summary(row) for name, row in table["rows"].items()}
    return table


def _finish(ctx: RunContext, results: dict, report_dir: Path) -> None:
    """Log the headline emulation losses, write results.json and report.md, log the report directory."""
    objective = results["objective_metric"]
    summary = {f"{enc}/{split}/{objective}": e[split][objective]["mean"]
               for enc, e in results["emulation"].items() for split in ("validation", "ood")}
    ctx.tracker.log_metrics({f"emulation/{k}": v for k, v in summary.items() if math.isfinite(v)}, 0)
    _write_report(results, report_dir)
    ctx.tracker.log_artifact(report_dir, "report")
    ctx.echo(f"report written to {report_dir / 'report.md'}")


def _write_report(results: dict, report_dir: Path) -> None:
    write_json_atomic(report_dir / "results.json", results, strict=True)
    (report_dir / "report.md").write_text(render_markdown(results, report_dir))


def rebuild_report(report_dir: str | Path, note: str | None = None) -> dict:
    """Recompute a finished comparison's aggregates, ordering paragraph, downstream bar plots and
    report.md from the per-run records in its results.json (nothing is retrained): for a report
    written by an older wspace, or after records were added to ``runs``. ``note`` (what was done
    to the records, say) is kept in results.json and shown under the report's header. Returns
    the results."""
    report_dir = Path(report_dir)
    path = report_dir / "results.json"
    if not path.exists():
        raise WspaceError(f"{report_dir} holds no results.json; point at the --out directory of a finished "
                          f"`wspace compare`")
    results = json.loads(path.read_text())
    if note:
        results["notes"] = [*results.get("notes", []), note]
    results.update(aggregate_runs(results["runs"], results["encoders"], seed=results["config"]["run"]["seed"]))
    plot_dir = report_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    results.setdefault("plots", {})["downstream"] = _downstream_plots(results, plot_dir)
    results["ordering"] = ordering_vs_paper(results)
    _write_report(results, report_dir)
    return results
