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

from wspace_core.config import RunConfig
from wspace_core.downstream import DOWNSTREAM_PRESETS, headline, predict_frozen, properties_of
from wspace_core.emulation import EmulatorArchitecture
from wspace_core.pretrain import PretrainResult, ZooSplit, embed, pretrain
from wspace_core.registry import WspaceError

BASELINE = "no_information"

Echo = Callable[[str], None]


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def zoo_config_for(config: RunConfig):
    from wspace_core.zoo.build import preset_config

    overrides = {"arch": config.arch, "device": config.device, **config.zoo}
    if config.task_settings:
        overrides["task_settings"] = config.task_settings
    return preset_config(config.task, config.preset, **overrides)


def ensure_zoo(config: RunConfig, echo: Echo, progress=None):
    """The zoo this run learns from: reused when one with the same configuration exists
    under ``out_dir/zoos``, resumed when a build of it was interrupted, built otherwise."""
    from wspace_core.zoo.build import build_zoo
    from wspace_core.zoo.store import Zoo

    zoo_config = zoo_config_for(config)
    path = Path(config.out_dir) / "zoos" / f"{config.arch}-{config.task}-{_digest(attrs.asdict(zoo_config))}"
    if (path / "manifest.json").exists():
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("status") == "complete":
            echo(f"reusing zoo {path}")
            return Zoo.open(path, expect_arch=config.arch)
        echo(f"resuming the interrupted zoo build in {path}")
        return build_zoo(zoo_config, path, resume=True, progress=progress)
    echo(f"building zoo {path} ({zoo_config.num_models} {config.arch} networks on {config.task})")
    return build_zoo(zoo_config, path, resume=False, progress=progress)


def _result_summary(result: PretrainResult) -> dict:
    return {"best_step": result.best_step, "best_validation": result.best_validation,
            "metrics": result.metrics, "steps_done": result.steps_done,
            "stopped_early": result.stopped_early, "seconds": result.seconds}


def baseline_result(zoo, config: RunConfig, echo: Echo, progress=None) -> dict:
    """The no-information floor for this zoo and pretraining configuration (cached on disk)."""
    key = _digest({"zoo": zoo.fingerprint, "pretrain": attrs.asdict(config.pretrain),
                   "z_dim": config.z_dim, "seed": config.seed, "preset": config.preset})
    path = Path(config.out_dir) / "baselines" / f"{key}.json"
    if path.exists():
        echo(f"reusing the no-information baseline {path}")
        return json.loads(path.read_text())
    echo("training the no-information baseline (z carries nothing about the network)")
    result = pretrain(zoo, BASELINE, config.pretrain, z_dim=config.z_dim, preset=config.preset,
                      seed=config.seed, device=config.device, progress=progress)
    summary = _result_summary(result)
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


def _task_labels(zoo, rows: np.ndarray) -> np.ndarray:
    task = zoo.task_family()
    cols = np.stack([zoo.metadata[c][rows] for c in task.task_columns], axis=1)
    _, labels = np.unique(cols.round(6), axis=0, return_inverse=True)
    return labels.reshape(-1)


def run(config: RunConfig, echo: Echo = print, zoo_progress=None, pretrain_progress=None,
        tracker=None) -> dict:
    """The whole line at the configured preset; returns the results dictionary (also results.json)."""
    from wspace_core import plots
    from wspace_core.tracking import Tracker

    t0 = time.perf_counter()
    tracker = tracker or Tracker(config.tracking_uri, config.experiment, enabled=config.tracking)
    zoo = ensure_zoo(config, echo, zoo_progress)
    run_dir = Path(config.out_dir) / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.encoder}-{config.task}"
    run_dir.mkdir(parents=True, exist_ok=True)
    baseline = baseline_result(zoo, config, echo, pretrain_progress)

    run_id = tracker.start_run(
        f"{config.encoder}-{config.task}",
        tags={"arch": config.arch, "task": config.task, "encoder": config.encoder,
              "zoo_fingerprint": zoo.fingerprint, "preset": config.preset},
    )
    status = "FAILED"
    try:
        tracker.log_params(attrs.asdict(config))
        (run_dir / "config.json").write_text(json.dumps(attrs.asdict(config), indent=2))
        tracker.log_artifact(run_dir / "config.json")
        echo(f"pretraining {config.encoder} by emulation ({config.pretrain.steps} steps at most)")
        result = pretrain(
            zoo, config.encoder, config.pretrain, z_dim=config.z_dim, preset=config.preset,
            encoder_options=config.encoder_options, seed=config.seed, device=config.device,
            checkpoint_dir=run_dir, log_metrics=tracker.log_metrics, progress=pretrain_progress,
        )
        torch.save({"encoder": result.encoder.state_dict(), "emulator": result.emulator.state_dict(),
                    "encoder_name": config.encoder, "config": json.dumps(attrs.asdict(config))},
                   run_dir / "encoder.pt")
        tracker.log_artifact(run_dir / "encoder.pt")

        rows, z = embeddings(result, zoo, "validation", config.device)
        perf = zoo.metadata[zoo.task_family().metric_columns[0]][rows]
        plot_paths = [
            plots.embedding_plot(z, _task_labels(zoo, rows), f"{config.encoder}: z of validation networks",
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
                                    DOWNSTREAM_PRESETS[config.preset], seed=config.seed, device=config.device)
        tracker.log_metrics({f"downstream/{prop}/{split}/{k}": v for prop, splits in downstream.items()
                             for split, ms in splits.items() for k, v in ms.items()}, result.best_step)
        objective = config.pretrain.objective
        results = {
            "encoder": config.encoder, "task": config.task, "arch": config.arch, "preset": config.preset,
            "zoo": str(zoo.path), "zoo_fingerprint": zoo.fingerprint, "objective": objective,
            "encoder_result": _result_summary(result), "baseline": baseline,
            "emulation_fidelity": {"original_mean": float(np.mean(fidelity["original"])),
                                   "emulated_mean": float(np.mean(fidelity["emulated"])),
                                   "correlation": _corr(fidelity["original"], fidelity["emulated"])},
            "downstream_frozen": downstream,
            "beats_baseline": result.metrics["validation"][objective] < baseline["metrics"]["validation"][objective],
            "run_dir": str(run_dir), "mlflow_run_id": run_id, "seconds": time.perf_counter() - t0,
        }
        tracker.log_metrics({f"best/{s}/{m}": v for s, ms in result.metrics.items() for m, v in ms.items()},
                            result.best_step)
        tracker.log_metrics({f"baseline/{s}/{m}": v for s, ms in baseline["metrics"].items()
                             for m, v in ms.items()}, 0)
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
        tracker.log_artifact(run_dir / "results.json")
        results["tracking"] = tracker.run_url_or_path()
        status = "FINISHED"
        return results
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_run(status)


def _corr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def results_table(results: dict) -> str:
    """A short table: validation and OOD emulation loss of the encoder against the baseline."""
    objective = results["objective"]
    enc, base = results["encoder_result"]["metrics"], results["baseline"]["metrics"]
    lines = [f"emulation loss ({objective}; lower is better)",
             f"{'':18s} {'validation':>12s} {'ood':>12s}"]
    for name, metrics in ((results["encoder"], enc), ("no-information", base)):
        lines.append(f"{name:18s} {metrics['validation'][objective]:12.4f} {metrics['ood'][objective]:12.4f}")
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
    lines.append(f"MLflow run {results['mlflow_run_id']}: {results.get('tracking')}")
    return "\n".join(lines)
