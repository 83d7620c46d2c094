"""Emulation-pretraining step: steps per second of every encoder, side by side in one run.

One step is exactly what ``wspace.training.pretrain.pretrain`` does per training step, from the
same set-up object (``Pretraining.build``: ``ZooSplit``, encoder, ``Emulator``, objective, AdamW
over encoder + emulator, clipping groups, batch sampler; ``Pretraining.train_step``): draw
``batch_size`` training rows and ``rollouts_per_network`` of each one's stored rollouts,
``ZooSplit.batch`` (memory-mapped zoo -> device), z = normalise(E(θ)) with random hidden-neuron
permutations where the encoder asks for them, the emulator on the rollouts with teacher forcing,
the objective, backward, gradient clipping, AdamW. Settings: the ``paper`` pretraining preset
(``PRETRAIN_PRESETS["paper"]``, the published code's: batch 64 networks, 1 rollout each,
emulator LSTM 256 x 2, total variation over all positions, lr 1e-4, clip 0.1 per module;
``--rollouts-per-network 16`` times wspace's option) and the ``paper`` encoder presets, on a
formal-languages zoo (LSTM 2 x 32, 6 inputs and outputs, T = 41).

Rollouts per network: the published implementation's (``--sequence_batch_size``, 1, also the
wspace ``paper`` preset's) unless ``--rollouts-per-network`` says otherwise; both sides always use
the same number.

With ``--reference DIR`` (a checkout of the published implementation, imported from there at run
time, see ``reference.py``) the published step of every encoder is timed in the same process,
interleaved with the wspace steps, on the same zoo written out in its dataset format
(``reference_pretrain.py``: its own argument defaults and encoder configs, its
``CombinedEncoderEmulator``, ``training_iteration``, clipping and AdamW); the table then gives
both ms/step and the speed-up (target >= 2x on CPU, >= 3x on a GPU). Without it, the published
rows say "not measured: no --reference given".

The steps are timed interleaved (step s of every encoder, then step s + 1 of every encoder), so
a machine shared with other work slows every encoder alike; reported per encoder: median and
minimum ms/step over ``--steps`` timed steps after ``--warmup`` untimed ones, and steps/s
(1000 / median). On CUDA the device is synchronised before and after every timed step.

    python benchmarks/pretrain_step.py --reference /work/ref            # CPU, warmup 2, 5 steps
    python benchmarks/pretrain_step.py --warmup 1 --steps 3 --json /tmp/pretrain_step.json
    python benchmarks/pretrain_step.py --device cuda --steps 50 --reference /work/ref   # on a GPU
    python benchmarks/pretrain_step.py --zoo zoos/formal --encoders dwsnet interactive_probing
    python benchmarks/pretrain_step.py --rollouts-per-network 16        # wspace's option: its cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import attrs
import torch

from wspace_core import plugins
from wspace.config import PretrainConfig, require_device
from wspace.presets import PRETRAIN_PRESETS
from wspace.reporting.roles import baseline_encoder
from wspace.training.pretrain import Pretraining, ZooSplit
from wspace_core.registry import WspaceError

PRESET = "paper"
#: the six encoders of the paper, in its order
PAPER_ENCODERS = ("layerwise_statistics", "flattened_weights", "parameter_transformer", "dwsnet",
                  "noninteractive_probing", "interactive_probing")
#: speed-up over the published step that issue #14 asks for, per device kind
TARGET_SPEEDUP = {"cpu": 2.0, "cuda": 3.0}
#: the published implementation's rollouts per network per step (its --sequence_batch_size default)
PUBLISHED_ROLLOUTS_PER_NETWORK = 1
#: the small zoo built when no --zoo is given: formal-language sizes, weights barely trained
ZOO_MODELS, ZOO_ROLLOUTS, ZOO_TRAIN_STEPS = 12, 16, 2


@attrs.define
class Bench:
    """One encoder's training step, set up as ``pretrain()`` sets it up."""

    name: str
    step: Callable[[], None]
    num_params: int
    times_ms: list[float] = attrs.field(factory=list)


def make_published_bench(name: str, zoo, dataset_dir: Path, config: PretrainConfig, seed: int,
                         device: torch.device) -> Bench:
    """The published implementation's step for encoder ``name`` (see reference_pretrain.py), with
    this run's batch, rollouts per network, objective and emulator size."""
    import reference_pretrain

    step, num_params, _ = reference_pretrain.make_published_step(
        name, dataset_dir, config.objective, config.batch_size, config.rollouts_per_network, device, seed,
        emulator=(config.emulator_hidden, config.emulator_layers))
    return Bench(f"published:{name}", step, num_params)


def make_bench(name: str, zoo, config: PretrainConfig, z_dim: int, seed: int, device: torch.device,
               preset: str = PRESET) -> Bench:
    """Encoder ``name``'s training step, set up by ``Pretraining.build`` as ``pretrain()`` sets it up."""
    setup = Pretraining.build(zoo, name, config, z_dim=z_dim, preset=preset, seed=seed, device=str(device))
    model = setup.model()

    def step() -> None:  # exactly pretrain()'s training step (one process, no logging)
        setup.train_step(model)

    return Bench(name, step, sum(p.numel() for p in setup.encoder.parameters()))


def emulator_matmul_gflop(config: PretrainConfig, input_size: int, output_size: int, length: int) -> float:
    """Matmul FLOPs (forward + backward, ~3x forward) of the emulator alone for one step: the
    part every encoder shares, a floor on what any implementation's step must compute."""
    H = config.emulator_hidden
    per_token = 2 * (input_size * H + config.emulator_layers * 4 * H * 2 * H + H * output_size)
    tokens = config.batch_size * config.rollouts_per_network * length
    return 3 * per_token * tokens / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(bench: Bench, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    bench.step()
    _sync(device)
    return (time.perf_counter() - start) * 1000


def open_or_build_zoo(path: str | None, workdir: str):
    from wspace.zoo import Zoo
    from wspace.zoo.build import build_zoo, preset_config

    if path is not None:
        return Zoo.open(path, expect_arch="lstm")
    config = preset_config("formal_languages", "smoke", num_models=ZOO_MODELS, num_rollouts=ZOO_ROLLOUTS,
                           steps=ZOO_TRAIN_STEPS)
    return build_zoo(config, Path(workdir) / "zoo")


def _encoder_names(args) -> list[str]:
    registered = plugins.encoders()
    if args.encoders:
        names = list(args.encoders)
    else:
        names = list(PAPER_ENCODERS)
    baseline = baseline_encoder()
    if args.include_baseline and baseline not in names:
        names.append(baseline)
    for name in names:
        registered.get(name)  # unknown names fail with the list of registered encoders
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N when a GPU is present")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per encoder first (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per encoder (default 5 on CPU, 50 on CUDA)")
    parser.add_argument("--encoders", nargs="+", help="encoders to time (default: the six of the paper)")
    parser.add_argument("--include-baseline", action="store_true", help="also time the no_information baseline")
    parser.add_argument("--zoo", help="an existing zoo directory (default: build a small formal-languages zoo "
                        "in a temporary directory)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--z-dim", type=int, default=16, help="embedding size (default 16, as wspace run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rollouts-per-network", type=int, default=PUBLISHED_ROLLOUTS_PER_NETWORK,
                        help=f"rollouts of each network per step, both sides (default "
                             f"{PUBLISHED_ROLLOUTS_PER_NETWORK}, the published code's; wspace's paper preset: 16)")
    parser.add_argument("--reference", help="checkout of the published implementation: also time its step")
    parser.add_argument("--preset", default=PRESET, choices=sorted(PRETRAIN_PRESETS),
                        help=f"pretraining and encoder preset (default {PRESET}; smoke: a seconds-long check)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.rollouts_per_network < 1:
        parser.error("--rollouts-per-network must be >= 1")
    if args.warmup < 0 or (args.steps is not None and args.steps < 1):
        parser.error("--warmup must be >= 0 and --steps >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def _load_reference(args) -> list[str]:
    """The stand-ins registered for the published code's unused imports; a wrong path fails here,
    before any work."""
    if not args.reference:
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference

    return reference.load(args.reference)[1]


def _check_rollouts(zoo, config: PretrainConfig) -> None:
    stored = zoo.rollout_inputs.shape[1]
    if stored < config.rollouts_per_network:
        raise WspaceError(f"zoo {zoo.path} stores {stored} rollouts per network but the run uses "
                          f"{config.rollouts_per_network}; pass a zoo that stores at least that many (the quick and "
                          f"paper zoo presets store 100), or leave out --zoo")


def make_benches(args, zoo, workdir: str, config: PretrainConfig, device: torch.device,
                 names: list[str]) -> tuple[list[Bench], dict[str, Bench]]:
    """wspace's bench of every encoder, then (with --reference) the published one of each that
    the published code has, on the same zoo written out in its dataset format."""
    benches = [make_bench(n, zoo, config, args.z_dim, args.seed, device, args.preset) for n in names]
    published: dict[str, Bench] = {}
    if args.reference:
        import reference_pretrain

        dataset_dir = reference_pretrain.write_published_dataset(
            zoo, Path(workdir) / "published_dataset", min_rows=8 * config.batch_size)
        published = {n: make_published_bench(n, zoo, dataset_dir, config, args.seed, device)
                     for n in names if n in reference_pretrain.PUBLISHED_CONFIGS}
    return benches, published


def time_interleaved(benches: list[Bench], device: torch.device, warmup: int, steps: int) -> None:
    """``warmup`` untimed steps of each bench (allocator, kernels, oneDNN/cuDNN plans), then
    ``steps`` timed rounds of one step of every bench: every encoder sees the same machine load."""
    for bench in benches:
        for _ in range(warmup):
            timed(bench, device)
    for _ in range(steps):
        for bench in benches:
            bench.times_ms.append(timed(bench, device))


def _machine(device: torch.device, load_before) -> dict:
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "processor": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
            "load_average_before": load_before, "load_average_after": os.getloadavg()}


def _settings(args, config: PretrainConfig, steps: int, zoo, train: ZooSplit) -> dict:
    task = train.task
    return {"preset": args.preset, "pretrain": attrs.asdict(config), "z_dim": args.z_dim,
            "warmup": args.warmup, "steps": steps, "seed": args.seed,
            "zoo": args.zoo or f"built: formal_languages smoke, {ZOO_MODELS} models, "
                               f"{ZOO_ROLLOUTS} rollouts, {ZOO_TRAIN_STEPS} training steps",
            "zoo_task": zoo.manifest["task"]["name"], "zoo_arch": zoo.manifest["architecture"]["name"],
            "zoo_sizes": attrs.asdict(train.arch.sizes), "sequence_length": task.sequence_length,
            "train_networks": len(train),
            "emulator_matmul_gflop_per_step": emulator_matmul_gflop(
                config, task.input_size, task.output_size, task.sequence_length)}


def _encoder_rows(benches: list[Bench], published: dict[str, Bench], reference: str | None) -> dict:
    """encoder -> its timing, and the published step's beside it where it was measured."""
    rows = {}
    for bench in benches:
        row = _timing(bench)
        theirs = published.get(bench.name)
        if theirs is not None:
            row["published"] = _timing(theirs)
            row["speedup_vs_published"] = row["published"]["ms_per_step_median"] / row["ms_per_step_median"]
        else:
            row["published"] = ("not measured: no --reference given" if not reference else
                                "not measured: the published code has no such encoder")
        rows[bench.name] = row
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_device(args.device)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    steps = args.steps or (50 if device.type == "cuda" else 5)
    config = PretrainConfig(**{**PRETRAIN_PRESETS[args.preset], "rollouts_per_network": args.rollouts_per_network})
    names = _encoder_names(args)
    stand_ins = _load_reference(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="wspace-bench-") as workdir:
        zoo = open_or_build_zoo(args.zoo, workdir)
        _check_rollouts(zoo, config)
        train = ZooSplit(zoo, "train", device)
        benches, published = make_benches(args, zoo, workdir, config, device, names)
        time_interleaved(benches + list(published.values()), device, args.warmup, steps)
    results = {
        "machine": _machine(device, load_before), "settings": _settings(args, config, steps, zoo, train),
        "reference": args.reference, "reference_stand_ins": stand_ins,
        "target_speedup": TARGET_SPEEDUP["cuda" if device.type == "cuda" else "cpu"],
        "encoders": _encoder_rows(benches, published, args.reference),
    }
    print_report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _timing(bench: Bench) -> dict:
    median = statistics.median(bench.times_ms)
    return {"ms_per_step_median": median, "ms_per_step_min": min(bench.times_ms), "steps_per_s": 1000 / median,
            "times_ms": bench.times_ms, "encoder_params": bench.num_params}


def print_report(results: dict) -> None:
    m, s = results["machine"], results["settings"]
    z = s["zoo_sizes"]
    p = s["pretrain"]
    on_cuda = m["gpu"] is not None
    print(f"device {m['device']}{' (' + m['gpu'] + ')' if on_cuda else ''}, {m['cores']} cores, "
          f"torch {m['torch']} ({m['torch_threads']} threads); load average "
          f"{m['load_average_before'][0]:.2f} before, {m['load_average_after'][0]:.2f} after")
    print(f"preset {s['preset']}: batch {p['batch_size']} networks x {p['rollouts_per_network']} rollouts, "
          f"emulator {p['emulator_hidden']} x {p['emulator_layers']}, {p['objective']}, z {s['z_dim']}; "
          f"zoo {s['zoo_arch']} {z['num_layers']} x {z['hidden_size']} ({z['input_size']} in, "
          f"{z['output_size']} out, T {s['sequence_length']}), {s['train_networks']} training rows; "
          f"{s['warmup']} warm-up + {s['steps']} timed steps each, interleaved; the emulator alone is "
          f"{s['emulator_matmul_gflop_per_step']:.0f} GFLOP of matmuls per step (forward + backward)")
    target = results["target_speedup"]
    header = (f"{'encoder':<24} {'ms/step median':>14} {'min':>8} {'steps/s':>8} {'published ms':>12} "
              f"{'speed-up':>8} {f'>= {target:g}x':>6}")
    print(header)
    print("-" * len(header))
    for name, r in results["encoders"].items():
        line = f"{name:<24} {r['ms_per_step_median']:>14.1f} {r['ms_per_step_min']:>8.1f} {r['steps_per_s']:>8.2f}"
        if isinstance(r["published"], dict):
            x = r["speedup_vs_published"]
            line += (f" {r['published']['ms_per_step_median']:>12.1f} {x:>7.2f}x "
                     f"{'yes' if x >= target else 'no':>6}")
        else:
            line += f"  {r['published']}"
        print(line)
    if results["reference_stand_ins"]:
        print(f"stand-ins registered for the published code's unused imports: "
              f"{', '.join(results['reference_stand_ins'])} (see benchmarks/reference.py)")


if __name__ == "__main__":
    try:
        main()
    except WspaceError as err:
        sys.exit(f"error: {err}")
