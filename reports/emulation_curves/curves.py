"""Emulation fidelity and the published emulation metric against pretraining steps and wall time
(issue #13): how far a pretraining setting gets at a small budget, and why.

One curve = one zoo × one pretraining setting. Pretraining runs in segments of ``--every`` steps
through wspace's own resumable pretraining (a checkpoint after each segment, resumed exactly:
the same numbers as one uninterrupted run); after each segment the current encoder and emulator
(read from the checkpoint, not the best state) are scored the way the main job scores them:

- ``emulated_good``: mean emulated performance of the validation networks whose own performance
  is ≥ ``--good`` (0.8), and ``ratio_good`` its mean ratio to theirs;
- ``correlation``: Pearson correlation of original and emulated performance over all scored
  validation networks;
- the published code's validation emulation loss (``published_total_variation``) and the trained
  objective, from pretraining's own evaluation.

Wall time counts pretraining only (scoring is excluded). Usage::

    python reports/emulation_curves/curves.py --zoo ZOO_DIR --setting name:objective=cross_entropy,lr=0.003 \\
        --encoder interactive_probing --steps 3000 --every 500 --out reports/emulation_curves/fl128

``--combine A/curves.json B/curves.json ... --out FIGURE.png`` draws the curves of several runs
(zoo sizes, settings) in one figure, each labelled by its zoo's size and its setting, or by
LABEL where given as ``LABEL=A/curves.json``; ``A/curves.json#SETTING`` takes one setting of a file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import attrs
import numpy as np
import torch

from wspace.cli.options import key_values
from wspace.config import PretrainConfig
from wspace.evaluation.fidelity import emulation_fidelity, pearson
from wspace.presets import PRETRAIN_PRESETS
from wspace.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from wspace.training.pretrain import PretrainResult, pretrain
from wspace.zoo.store import Zoo


def parse_setting(spec: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, PretrainConfig overrides)."""
    name, _, body = spec.partition(":")
    return name, key_values(tuple(kv for kv in body.split(",") if kv), "--setting")


def score(result: PretrainResult, zoo: Zoo, max_networks: int, good: float) -> dict:
    """Emulation fidelity on the validation split (the main job's figures)."""
    fid = emulation_fidelity(result, zoo, "validation", "cpu", max_networks=max_networks, seed=0)
    original, emulated = fid["original"], fid["emulated"]
    keep = original >= good
    return {"networks": int(len(original)), "good_networks": int(keep.sum()),
            "original_good": float(original[keep].mean()) if keep.any() else None,
            "emulated_good": float(emulated[keep].mean()) if keep.any() else None,
            "ratio_good": float((emulated[keep] / original[keep]).mean()) if keep.any() else None,
            "correlation": pearson(original, emulated), "emulated_mean": float(emulated.mean())}


def curve(zoo: Zoo, encoder: str, config: PretrainConfig, steps: int, every: int, preset: str,
          max_networks: int, good: float, seed: int = 0, z_dim: int = 16, encoder_options: dict | None = None,
          echo=print) -> list[dict]:
    points, wall = [], 0.0
    with tempfile.TemporaryDirectory() as ckpt:
        for stop in range(every, steps + 1, every):
            segment = attrs.evolve(config, steps=stop, eval_every=every, checkpoint_every=every, patience=0)
            result = pretrain(zoo, encoder, segment, preset=preset, seed=seed, z_dim=z_dim,
                              encoder_options=encoder_options, checkpoint_dir=Path(ckpt), resume=stop > every)
            wall += result.seconds
            state = load_checkpoint(Path(ckpt) / CHECKPOINT_FILE)  # the current weights, not the best
            result.encoder.load_state_dict(state["encoder"])
            result.emulator.load_state_dict(state["emulator"])
            last = state["history"][-1]
            point = {"step": stop, "pretrain_seconds": round(wall, 1), **score(result, zoo, max_networks, good),
                     **{k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("validation/")}}
            points.append(point)
            echo(json.dumps(point))
    return points


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, entry in curves.items():
        pts = entry["points"]
        steps = [p["step"] for p in pts]
        axes[0].plot(steps, [p["emulated_good"] or 0 for p in pts], marker="o", label=name)
        axes[1].plot([p["pretrain_seconds"] / 60 for p in pts], [p["emulated_good"] or 0 for p in pts],
                     marker="o", label=name)
        axes[2].plot(steps, [p.get("published_total_variation", np.nan) for p in pts], marker="o", label=name)
    axes[0].set(xlabel="pretraining steps", ylabel="emulated performance (validation, original ≥ 0.8)")
    axes[1].set(xlabel="pretraining minutes (this machine)", ylabel="emulated performance")
    axes[2].set(xlabel="pretraining steps", ylabel="published total variation (validation)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", help="a built zoo directory")
    ap.add_argument("--setting", action="append",
                    help="name:key=value,... PretrainConfig overrides of the preset (repeatable)")
    ap.add_argument("--encoder", default="interactive_probing")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--max-networks", type=int, default=60)
    ap.add_argument("--good", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed (the scored networks do not change)")
    ap.add_argument("--z-dim", type=int, default=16, help="the representation's size (the run's default: 16)")
    ap.add_argument("--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an encoder option, as `wspace run --encoder-option` takes it (repeatable)")
    ap.add_argument("--out", required=True, help="output folder (curves.json, curves.png); with --combine, the figure")
    ap.add_argument("--combine", nargs="+", metavar="CURVES_JSON", help="plot these curves.json files together")
    args = ap.parse_args()
    if args.combine:
        combined = {}
        for spec in args.combine:  # [LABEL=]FILE[#SETTING]: one setting of a file, labelled
            label, _, file = spec.rpartition("=")
            file, _, only = file.partition("#")
            for name, entry in json.loads(Path(file).read_text()).items():
                if not only or name == only:
                    combined[label or f"{entry['zoo_models']} networks, {name}"] = entry
        plot(combined, Path(args.out))
        return
    if not args.zoo or not args.setting:
        ap.error("--zoo and --setting are required (or --combine)")
    torch.set_num_threads(1)
    zoo = Zoo.open(args.zoo)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curves.json"
    curves = json.loads(path.read_text()) if path.exists() else {}
    encoder_options = key_values(tuple(args.encoder_option), "--encoder-option")
    for spec in args.setting:
        name, overrides = parse_setting(spec)
        config = PretrainConfig(**{**PRETRAIN_PRESETS[args.preset], **overrides})
        if config.lr_schedule != "constant" and args.every != args.steps:
            ap.error(f"setting {name!r}: a {config.lr_schedule} schedule ends at the run's last step, so "
                     f"segments of a longer run are not the runs they stand for; pass --every {args.steps}")
        t0 = time.perf_counter()
        points = curve(zoo, args.encoder, config, args.steps, args.every, args.preset, args.max_networks, args.good,
                       args.seed, args.z_dim, encoder_options)
        curves[name] = {"zoo": str(args.zoo), "zoo_models": zoo.num_models, "encoder": args.encoder, "seed": args.seed,
                        "z_dim": args.z_dim, "encoder_options": encoder_options,
                        "config": attrs.asdict(config), "points": points,
                        "total_seconds": round(time.perf_counter() - t0, 1)}
        path.write_text(json.dumps(curves, indent=1))
        plot(curves, out / "curves.png")


if __name__ == "__main__":
    main()
