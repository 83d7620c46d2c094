"""Zoo-building training step: the batched builder against per-model torch.nn.LSTM loops.

One full training step of K networks (2-layer LSTM, hidden 32, + linear read-out; batch 32,
T = 41, 6 one-hot inputs and 6 outputs as in formal_languages; forward, backward, AdamW),
measured side by side in one run on this machine:

- builder:            what ``build_zoo`` does on CPU: the K models in groups of CPU_GROUP_SIZE,
                      each group one batched computation (wspace.zoo.train.BatchedTrainer),
                      spread over one single-threaded worker process per core;
- batched, 1 process: all K models as ONE batched computation in one process, torch's default
                      intra-op threads;
- loop, 1 process:    torch.nn.LSTM + nn.Linear + torch.optim.AdamW, one model after another
                      (oneDNN's fused LSTM kernel), torch's default threads;
- loop, P processes:  the same loop in one process per core (torch.set_num_threads(1) each),
                      the models split between them.

Reported: model-steps per second (wall clock; best of --rounds interleaved rounds, so a busy
machine hurts every method alike; the median too), model-steps per CPU second (what each
method costs, whatever else runs on the machine; for threaded methods it counts spinning
threads too), ratios of the wall-clock rates against both loops, and the matmul GFLOP/s
achieved (forward + backward FLOPs of every matmul) against the ~130 GFLOP/s this CPU
sustains on batched matmuls of these shapes.

    python benchmarks/zoo_build.py                      # K = 16, 64, 256; a few minutes
    python benchmarks/zoo_build.py --ks 64 --seconds 2 --json /tmp/zoo_build.json

End to end (``--end-to-end``): ``build_zoo`` itself (the real ``wspace zoo build`` path: task
data, evaluation snapshots, rollouts, chunk commits, worker processes) building the zoo measured
in benchmarks/README.md, the quick preset's formal-languages zoo as it was before issue #13
(K = 128, 1500 steps on the paper's schedule, 9 snapshots, languages drawn independently, 500
evaluation strings, 100 rollouts; ``--models``/``--steps`` shrink it), beside the published implementation's per-network
loop (``dataset_creation_formal_language.py``: its language sampler, ``RNNFast`` (torch.nn.LSTM),
AdamW, learning-rate schedule, ``evaluate_rnn`` snapshots and rollouts, storage) doing the same
work per model, one single-threaded process per core, each training ``--loop-models`` models
(its cost is the same for every model, so a few give its rate). The published code is imported
from the checkout given as ``--reference DIR``; without it that row says "not measured".

    python benchmarks/zoo_build.py --end-to-end --reference /work/ref --json /tmp/zoo_e2e.json
    python benchmarks/zoo_build.py --end-to-end --steps 150 --reference /work/ref   # a short run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

I = O = 6  # formal_languages: a, b, c, d, BOS, EOS
H, LAYERS, B, T = 32, 2, 32, 41
LR, WEIGHT_DECAY = 0.003, 1e-4
CEILING_GFLOPS = 130.0


def matmul_flops_per_model_step() -> int:
    """Multiply-adds × 2 of every matmul in forward + backward (no input gradient for layer 0)."""
    forward = sum(2 * B * T * 4 * H * ((I if layer == 0 else H) + H) for layer in range(LAYERS))
    forward += 2 * B * T * H * O
    return 3 * forward - 2 * B * T * 4 * H * I


def _data(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(I, (k, B, T + 1), generator=gen)
    return F.one_hot(tokens[..., :-1], I).float(), tokens[..., 1:]


def _mean_ce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M, B, T, O) logits, (M, B, T) targets -> (M,) mean cross-entropy of each model."""
    logp = F.log_softmax(outputs, dim=-1)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).flatten(1).mean(1)


# ---- the batched builder -----------------------------------------------------------------------


def _trainers(k: int, group_size: int, seed: int = 0):
    """(BatchedTrainer, x, y) for k models in groups of at most ``group_size``."""
    from wspace_core import plugins
    from wspace_core.architecture import Sizes
    from wspace.zoo.train import BatchedTrainer, split_groups

    arch = plugins.architectures().get("lstm")(Sizes(I, H, O, LAYERS))
    out = []
    for g, members in enumerate(split_groups(k, -(-k // group_size))):
        params = arch.init(len(members), torch.Generator().manual_seed(seed + g))
        x, y = _data(len(members), seed=seed + 100 + g)
        out.append((BatchedTrainer(arch, params, _mean_ce, torch.full((len(members),), WEIGHT_DECAY)), x, y))
    return out


def _batched_step(trainers) -> None:
    for trainer, x, y in trainers:
        trainer.step(x, y, LR)


# ---- per-model torch.nn.LSTM loops -------------------------------------------------------------


def _torch_models(k: int, seed: int):
    torch.manual_seed(seed)
    models = []
    for _ in range(k):
        lstm, linear = torch.nn.LSTM(I, H, LAYERS, batch_first=True), torch.nn.Linear(H, O)
        opt = torch.optim.AdamW([*lstm.parameters(), *linear.parameters()], lr=LR, betas=(0.9, 0.999),
                                eps=1e-8, weight_decay=WEIGHT_DECAY)
        models.append((lstm, linear, opt))
    x, y = _data(k, seed + 1)
    return models, x, y


def _loop_step(state) -> None:
    models, x, y = state
    for m, (lstm, linear, opt) in enumerate(models):
        out = linear(lstm(x[m])[0])  # (B, T, O)
        loss = F.cross_entropy(out.reshape(-1, O), y[m].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ---- timing ------------------------------------------------------------------------------------


def _setup(method: str, k: int, seed: int, group_size: int):
    if method == "loop":
        return _loop_step, _torch_models(k, seed)
    return _batched_step, _trainers(k, group_size, seed)


def _timed(step, state, k: int, seconds: float) -> tuple[float, float]:
    """(model-steps per wall second, CPU seconds used) of ``step`` over about ``seconds``."""
    step(state)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        step(state)
        n += 1
    return n * k / (time.perf_counter() - start), (time.process_time() - cpu) / (n * k)


def in_process(method: str, k: int, seconds: float, group_size: int) -> tuple[float, float]:
    """(model-steps per second, model-steps per CPU second)."""
    step, state = _setup(method, k, 0, group_size)
    rate, cpu_per_step = _timed(step, state, k, seconds)
    return rate, 1 / cpu_per_step


def _worker(method: str, k: int, seconds: float, seed: int, group_size: int, barrier, results) -> None:
    torch.set_num_threads(1)
    step, state = _setup(method, k, seed, group_size)
    step(state)
    barrier.wait()
    results.put(_timed(step, state, k, seconds))


def in_processes(method: str, k: int, processes: int, seconds: float, group_size: int) -> tuple[float, float]:
    """(total model-steps per second, model-steps per CPU second) of k models split over
    single-threaded processes."""
    ctx = mp.get_context("spawn")
    shares = [s for s in (k // processes + (p < k % processes) for p in range(processes)) if s]
    barrier, results = ctx.Barrier(len(shares)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(method, share, seconds, 1000 * p, group_size, barrier, results))
             for p, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    outcomes = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    rate = sum(r for r, _ in outcomes)
    cpu_seconds = sum(r * c for r, c in outcomes)  # CPU seconds per wall second, all processes
    return rate, rate / cpu_seconds


# ---- end to end: build_zoo beside the published per-network loop ---------------------------------


def _usage() -> tuple[float, int]:
    """(CPU seconds, minor page faults) of this process and its finished children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime), own.ru_minflt + kids.ru_minflt


#: the zoo the end-to-end figures in benchmarks/README.md were measured on: the quick preset's
#: formal-languages zoo before issue #13 changed it (the same fingerprint as then)
MEASURED_ZOO = dict(steps=1500, snapshot_fractions="paper", lr_fractions="paper",
                    task_settings={"language_draw": "uniform"})


def end_to_end_config(models: int, steps: int | None):
    """The measured zoo (``MEASURED_ZOO``), with ``models`` networks (one chunk) and ``steps``."""
    from wspace.zoo.build import preset_config

    overrides = {**MEASURED_ZOO, **({"steps": steps} if steps is not None else {})}
    return preset_config("formal_languages", "quick", num_models=models, chunk_size=models, **overrides)


def time_build_zoo(config, workers: int, group_size: int) -> dict:
    """Wall and CPU time of ``build_zoo(config)`` into a temporary directory, everything included."""
    from wspace.zoo.build import build_zoo

    with tempfile.TemporaryDirectory(prefix="wspace-bench-zoo-") as tmp:
        cpu0, faults0 = _usage()
        start = time.perf_counter()
        build_zoo(config, Path(tmp) / "zoo", workers=workers, group_size=group_size)
        wall = time.perf_counter() - start
        cpu1, faults1 = _usage()
    model_steps = config.num_models * config.schedule.steps
    return {"wall_s": wall, "cpu_s": cpu1 - cpu0, "minor_page_faults": faults1 - faults0,
            "model_steps": model_steps, "model_steps_per_s": model_steps / wall,
            "model_steps_per_cpu_s": model_steps / (cpu1 - cpu0)}


def _reference_worker(reference_dir: str, models: int, seed: int, settings: dict, out_dir: str,
                      barrier, results) -> None:
    """One process of the published per-network loop (dataset_creation_formal_language.main's
    body with this zoo's schedule, evaluation and rollout counts), single-threaded."""
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference

    reference.load(reference_dir)
    fl = reference.module("dataset_creation_formal_language")
    rnn_models = reference.module("modules_rnn_models")
    torch.manual_seed(seed)
    barrier.wait()
    cpu0, start = time.process_time(), time.perf_counter()
    storage = _ReferenceStorage(fl, Path(out_dir))
    for n in range(models):
        _reference_network(fl, rnn_models, n, settings, storage)
        storage.end_network(n)
    storage.close()
    results.put((models * (settings["steps"] + 1), time.perf_counter() - start, time.process_time() - cpu0))


#: the arrays the published loop stores at every snapshot
_REFERENCE_ARRAYS = ("sequences", "logits", "parameters", "num_step_correct", "tasks")


class _ReferenceStorage:
    """The published loop's storage: every snapshot appended to one .npy per array
    (``NpyAppendArray``), or, where that package is missing, kept and saved per network."""

    def __init__(self, fl, out: Path):
        self.out, self.append = out, fl.NpyAppendArray is not None
        self.files = ({name: fl.NpyAppendArray(str(out / f"{name}.npy"), delete_if_exists=True)
                       for name in _REFERENCE_ARRAYS} if self.append else {})
        self.kept: dict[str, list] = {name: [] for name in _REFERENCE_ARRAYS}

    def add(self, rows: dict[str, np.ndarray]) -> None:
        for name, row in rows.items():
            if self.append:
                self.files[name].append(row)
            else:
                self.kept[name].append(row)

    def end_network(self, n: int) -> None:
        if not self.append:
            for name, rows_kept in self.kept.items():
                np.save(self.out / f"{name}_{n}.npy", np.concatenate(rows_kept))
            self.kept = {name: [] for name in _REFERENCE_ARRAYS}

    def close(self) -> None:
        for array in self.files.values():
            array.close()


def _reference_network(fl, rnn_models, n: int, settings: dict, storage: _ReferenceStorage) -> None:
    """Network ``n`` of the published loop: its language, training and snapshots."""
    task = [0] + torch.randint(low=-3, high=3, size=(3,)).tolist()
    language = fl.RelativeOccurrenceLanguage(occurrence_differences=task, sequence_length=settings["tokens"],
                                             max_n=settings["max_n"], device="cpu")
    rnn = rnn_models.RNNFast(hidden_size=settings["hidden"], input_size=language.total_tokens,
                             output_size=language.total_tokens, num_layers=settings["layers"], input_batch=True)
    optimizer = torch.optim.AdamW(rnn.parameters(), lr=0.01, weight_decay=settings["weight_decay"])
    schedule = rnn_models.PiecewiseLinearSchedule(timesteps=[s for s, _ in settings["lr_points"]],
                                                  values=[v for _, v in settings["lr_points"]])
    for group in optimizer.param_groups:
        group["lr"] = schedule(0)
    for step in range(settings["steps"] + 1):
        sequence, probabilities = language(settings["batch_size"])
        input_sequence = torch.nn.functional.one_hot(sequence[:, :-1], language.total_tokens).float()
        labels = sequence[:, 1:]
        output, _ = rnn(input_sequence)
        loss = torch.nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        if step in settings["snapshot_steps"]:
            storage.add(_reference_snapshot(fl, rnn, language, n, step, task, settings))


def _reference_snapshot(fl, rnn, language, n: int, step: int, task: list[int], settings: dict) -> dict:
    """The published loop's stored rows of one snapshot: evaluation, rollouts, weights."""
    num_correct, _, _, _ = fl.evaluate_rnn(rnn, language, settings["eval_strings"], one_hot_input=True,
                                           device="cpu", max_sequence_length=settings["tokens"])
    _, sequences, logits, _ = fl.evaluate_rnn(rnn, language, settings["rollouts"], one_hot_input=True,
                                              device="cpu", max_sequence_length=settings["tokens"])
    return {"sequences": sequences.to(torch.int16).unsqueeze(0).numpy(),
            "logits": logits.to(torch.float16).unsqueeze(0).numpy(),
            "parameters": torch.cat([p.detach().flatten() for p in rnn.parameters()]).unsqueeze(0).numpy(),
            "num_step_correct": np.array([n, step, num_correct]).reshape(1, -1),
            "tasks": np.array(task).reshape(1, -1)}


def time_reference_loop(reference_dir: str, config, processes: int, loop_models: int) -> dict:
    """The published loop in ``processes`` single-threaded processes, ``loop_models`` networks each,
    timed from a common start (after imports) to the last process's end."""
    from wspace.zoo.build import task_for

    task = task_for(config)
    schedule = config.schedule
    settings = {"steps": schedule.steps, "snapshot_steps": list(schedule.snapshot_steps),
                "batch_size": schedule.batch_size, "lr_points": [list(p) for p in schedule.lr_points],
                "weight_decay": schedule.weight_decay, "tokens": task.sequence_length + 1,
                "max_n": task.config.max_n, "hidden": config.hidden_size,
                "layers": config.num_layers, "eval_strings": config.task_settings["num_eval_strings"],
                "rollouts": config.num_rollouts}
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="wspace-bench-reference-") as tmp:
        dirs = [Path(tmp) / f"p{p}" for p in range(processes)]
        for d in dirs:
            d.mkdir()
        procs = [ctx.Process(target=_reference_worker,
                             args=(reference_dir, loop_models, 1000 + p, settings, str(dirs[p]), barrier, results))
                 for p in range(processes)]
        for proc in procs:
            proc.start()
        outcomes = []
        try:
            while len(outcomes) < len(procs):
                try:
                    outcomes.append(results.get(timeout=5))
                except queue.Empty:
                    dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"a published-loop process failed (exit code {dead[0]}); its error is "
                                           f"printed above") from None
        finally:
            for proc in procs:
                if proc.is_alive() and len(outcomes) < len(procs):
                    proc.terminate()
                proc.join()
    model_steps = sum(n for n, _, _ in outcomes)
    wall = max(w for _, w, _ in outcomes)
    cpu = sum(c for _, _, c in outcomes)
    return {"wall_s": wall, "cpu_s": cpu, "model_steps": model_steps, "model_steps_per_s": model_steps / wall,
            "model_steps_per_cpu_s": model_steps / cpu, "processes": processes, "models_per_process": loop_models,
            "settings": settings}


def run_end_to_end(args, cores: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference

    config = end_to_end_config(args.models, args.steps)
    flops = matmul_flops_per_model_step()
    stand_ins = []
    if args.reference:
        _, stand_ins = reference.load(args.reference)  # fails early, with the fix, on a wrong path
    results = {"machine": _machine(cores), "mode": "end_to_end",
               "zoo": {"task": config.task, "models": config.num_models, "steps": config.schedule.steps,
                       "snapshot_steps": list(config.schedule.snapshot_steps),
                       "eval_strings": config.task_settings["num_eval_strings"], "rollouts": config.num_rollouts,
                       "workers": args.processes, "group_size": args.group_size},
               "matmul_flops_per_model_step": flops, "ceiling_gflops": CEILING_GFLOPS,
               "reference": str(reference.checkout_dir(args.reference)) if args.reference else None,
               "reference_stand_ins": stand_ins, "rounds": []}
    print(f"{cores} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}; zoo: "
          f"{config.num_models} formal-language LSTMs x {config.schedule.steps} steps, "
          f"{len(config.schedule.snapshot_steps)} snapshots ({config.task_settings['num_eval_strings']} evaluation "
          f"strings, {config.num_rollouts} rollouts each)")
    for _ in range(args.rounds):
        row = {"builder": time_build_zoo(config, args.processes, args.group_size)}
        if args.reference:
            row["published_loop"] = time_reference_loop(args.reference, config, args.processes, args.loop_models)
        results["rounds"].append(row)
    best = {name: max((r[name] for r in results["rounds"]), key=lambda x: x["model_steps_per_s"])
            for name in results["rounds"][0]}
    for r in best.values():
        r["gflops"] = r["model_steps_per_s"] * flops / 1e9
        r["quick_zoo_minutes"] = PRESET_QUICK_MODEL_STEPS / r["model_steps_per_s"] / 60
    results["best"] = best
    if "published_loop" in best:
        results["speedup"] = best["builder"]["model_steps_per_s"] / best["published_loop"]["model_steps_per_s"]
    results["machine"]["load_average_after"] = os.getloadavg()
    _print_end_to_end(results, args.processes)
    return results


#: model-steps of the quick preset's formal-languages zoo (128 networks x 1500 steps)
PRESET_QUICK_MODEL_STEPS = 128 * 1500


def _print_end_to_end(results: dict, processes: int) -> None:
    best = results["best"]
    header = (f"{'method':<34} {'wall s':>8} {'model-steps/s':>13} {'per CPU-s':>9} {'GFLOP/s':>8} "
              f"{'of 130':>7} {'quick zoo':>9}")
    print(header)
    print("-" * len(header))
    names = {"builder": f"build_zoo ({processes} workers)",
             "published_loop": f"published loop ({processes} processes)"}
    for key in ("builder", "published_loop"):
        if key not in best:
            print(f"{names[key]:<34} not measured: no --reference given")
            continue
        r = best[key]
        print(f"{names[key]:<34} {r['wall_s']:>8.1f} {r['model_steps_per_s']:>13.0f} "
              f"{r['model_steps_per_cpu_s']:>9.0f} {r['gflops']:>8.1f} "
              f"{100 * r['gflops'] / results['ceiling_gflops']:>6.0f}% {r['quick_zoo_minutes']:>7.1f} min")
    if "speedup" in results:
        print(f"build_zoo / published loop: {results['speedup']:.2f}x (target >= 2x)")
    if results["reference_stand_ins"]:
        print(f"stand-ins registered for the published code's unused imports: "
              f"{', '.join(results['reference_stand_ins'])} (see benchmarks/reference.py)")
    m = results["machine"]
    print(f"load average {m['load_average_before'][0]:.2f} before, {m['load_average_after'][0]:.2f} after")


def _machine(cores: int) -> dict:
    return {"cores": cores, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "load_average_before": os.getloadavg()}


# ---- the run -----------------------------------------------------------------------------------


def main(argv=None) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("processes", "group_size", "models", "loop_models", "steps", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.end_to_end:
        args.rounds = args.rounds or 1
        results = run_end_to_end(args, cores)
    else:
        args.rounds = args.rounds or 3
        results = run_training_steps(args, cores)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _parser() -> argparse.ArgumentParser:
    from wspace.zoo.build import CPU_GROUP_SIZE, default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 64, 256], help="models per chunk")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per method and round")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds, best reported (default 3; 1 with --end-to-end)")
    parser.add_argument("--processes", type=int, default=default_workers("cpu"),
                        help="processes of the builder and of the per-core loop (default: one per core)")
    parser.add_argument("--group-size", type=int, default=CPU_GROUP_SIZE, help="models per group of the builder")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time build_zoo itself beside the published per-network loop (see the module doc)")
    parser.add_argument("--models", type=int, default=128, help="--end-to-end: networks in the zoo (default 128)")
    parser.add_argument("--steps", type=int, default=None,
                        help="--end-to-end: training steps (default 1500, as measured)")
    parser.add_argument("--loop-models", type=int, default=2,
                        help="--end-to-end: networks each published-loop process trains (default 2)")
    parser.add_argument("--reference", help="--end-to-end: checkout of the published implementation")
    return parser


def run_training_steps(args, cores: int) -> dict:
    """One training step of K networks by each method, for every K of ``args.ks``, best of
    ``args.rounds`` interleaved rounds."""
    P, g = args.processes, args.group_size
    flops = matmul_flops_per_model_step()
    # the loop in P worker processes; with P = 1 its name would clash with the in-process loop's
    loop_pool = f"loop_{P}proc" if P > 1 else "loop_1proc_pool"
    methods = {
        f"builder_{P}proc_g{g}": lambda k: in_processes("batched", k, P, args.seconds, g),
        "batched_1proc": lambda k: in_process("batched", k, args.seconds, k),
        "loop_1proc": lambda k: in_process("loop", k, args.seconds, g),
        loop_pool: lambda k: in_processes("loop", k, P, args.seconds, g),
    }
    results = {"machine": _machine(cores),
               "shape": {"input": I, "hidden": H, "layers": LAYERS, "output": O, "batch": B, "steps": T},
               "matmul_flops_per_model_step": flops, "ceiling_gflops": CEILING_GFLOPS,
               "seconds": args.seconds, "rounds": args.rounds, "results": {}}
    print(f"{cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
          f"{os.getloadavg()[0]:.1f}; {flops / 1e6:.1f} MFLOP of matmuls per model-step")
    for k in args.ks:
        rates: dict[str, list[float]] = {name: [] for name in methods}
        cpu_rates: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, run in methods.items():
                rate, cpu_rate = run(k)
                rates[name].append(rate)
                cpu_rates[name].append(cpu_rate)
        results["results"][str(k)] = {
            name: {"model_steps_per_s": max(r), "median": statistics.median(r), "rounds": r,
                   "model_steps_per_cpu_s": max(cpu_rates[name]), "gflops": max(r) * flops / 1e9}
            for name, r in rates.items()}
    results["machine"]["load_average_after"] = os.getloadavg()
    _print_table(results, list(methods))
    return results


def _print_table(results: dict, names: list[str]) -> None:
    loop1, loopP = names[2], names[3]
    header = (f"{'K':>5} {'method':<18} {'model-steps/s':>13} {'median':>7} {'per CPU-s':>9} {'GFLOP/s':>8} "
              f"{'of 130':>7} {'vs ' + loop1:>14} {'vs ' + loopP:>14}")
    print(header)
    print("-" * len(header))
    for k, row in results["results"].items():
        for name in names:
            r = row[name]
            rate = r["model_steps_per_s"]
            print(f"{k:>5} {name:<18} {rate:>13.0f} {r['median']:>7.0f} {r['model_steps_per_cpu_s']:>9.0f} "
                  f"{r['gflops']:>8.1f} "
                  f"{100 * r['gflops'] / results['ceiling_gflops']:>6.0f}% "
                  f"{rate / row[loop1]['model_steps_per_s']:>13.2f}x {rate / row[loopP]['model_steps_per_s']:>13.2f}x")


if __name__ == "__main__":
    main()
