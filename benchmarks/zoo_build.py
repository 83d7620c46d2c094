"""Zoo-building training step: the batched builder against per-model torch.nn.LSTM loops.

One full training step of K networks (2-layer LSTM, hidden 32, + linear read-out; batch 32,
T = 41, 6 one-hot inputs and 6 outputs as in formal_languages; forward, backward, AdamW),
measured side by side in one run on this machine:

- builder:            what ``build_zoo`` does on CPU: the K models in groups of CPU_GROUP_SIZE,
                      each group one batched computation (wspace_core.zoo.train.BatchedTrainer),
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
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time

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
    from wspace_core.zoo.train import BatchedTrainer, split_groups

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


# ---- the run -----------------------------------------------------------------------------------


def main(argv=None) -> dict:
    from wspace_core.zoo.build import CPU_GROUP_SIZE, default_workers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 64, 256], help="models per chunk")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per method and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best is reported)")
    parser.add_argument("--processes", type=int, default=default_workers("cpu"),
                        help="processes of the builder and of the per-core loop (default: one per core)")
    parser.add_argument("--group-size", type=int, default=CPU_GROUP_SIZE, help="models per group of the builder")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    P, g = args.processes, args.group_size
    flops = matmul_flops_per_model_step()
    methods = {
        f"builder_{P}proc_g{g}": lambda k: in_processes("batched", k, P, args.seconds, g),
        "batched_1proc": lambda k: in_process("batched", k, args.seconds, k),
        "loop_1proc": lambda k: in_process("loop", k, args.seconds, g),
        f"loop_{P}proc": lambda k: in_processes("loop", k, P, args.seconds, g),
    }
    results = {"machine": {"cores": cores, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                           "processor": platform.processor() or platform.machine(),
                           "load_average_before": os.getloadavg()},
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
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
