"""Beyond one machine: ``torch.distributed`` for zoo builds and pretraining, launched by torchrun.

torchrun gives every process RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR / MASTER_PORT).
``setup`` reads them and joins the process group once: gloo for CPU tensors, and nccl for CUDA
tensors when the work runs on a GPU (each process on ``cuda:LOCAL_RANK``). Without those
variables, or with a world size of 1, nothing is initialised and every helper here is the
identity of one process, so a plain ``wspace ...`` behaves exactly as it does without torchrun.

- Zoo build: rank r of W builds the chunks ``chunk_id % W == r`` into the shared ``--out``
  directory (its own rank lock), all ranks meet, and rank 0 finalizes the directory with
  ``merge_zoos([out], out)``: the zoo is byte-identical to a single-process build.
- Pretraining (``wspace.training.pretrain``): encoder and emulator in one module wrapped in
  DistributedDataParallel; each rank draws its share of the batch; rank 0 alone checkpoints and
  logs. ``RankShare`` is all a pretraining knows of the ranks. See docs/scaling.md.
"""

from __future__ import annotations

import atexit
import gc
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import attrs
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from wspace_core.registry import WspaceError

#: seconds one collective may wait for the slowest rank (rank 0 merging a zoo, or finishing the
#: evaluation of a run while the others wait for its results)
TIMEOUT_ENV = "WSPACE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600
#: rank r > 0 draws its training batches from seed + r * RANK_SEED_STRIDE (rank 0 from the seed)
RANK_SEED_STRIDE = 1_000_003
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@attrs.frozen
class DistContext:
    """Where this process stands in the job: rank of world_size, local_rank of the
    local_world_size processes on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """Whether several processes take part (collectives do something)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and merges."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """This rank's device: a plain ``cuda`` becomes ``cuda:LOCAL_RANK`` under a multi-process
        launch; anything else (``cpu``, ``cuda:1``) is kept as given."""
        dev = torch.device(device)
        if self.enabled and dev.type == "cuda" and dev.index is None:
            return f"cuda:{self.local_rank}"
        return str(dev)


def _int_env(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise WspaceError(f"environment variable {name}={raw!r} is not an integer; launch with "
                          f"torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK") from None


def launch_context() -> DistContext:
    """The context torchrun's variables describe (one process when they are not all set)."""
    local_world = _int_env("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else 1
    if dist.is_available() and dist.is_initialized():
        local = _int_env("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
        return DistContext(dist.get_rank(), dist.get_world_size(), local, local_world)
    if not all(name in os.environ for name in _LAUNCH_VARS):
        return DistContext()
    rank, world, local = (_int_env(name) for name in _LAUNCH_VARS)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise WspaceError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not describe a job "
                          f"(need 0 <= RANK < WORLD_SIZE); launch with torchrun")
    return DistContext(rank, world, local, max(1, local_world))


def is_main() -> bool:
    """True in rank 0 and in a process not launched by torchrun."""
    return launch_context().is_main


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise WspaceError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return timedelta(seconds=seconds)


def setup(device: str = "cpu") -> DistContext:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1 (once per process);
    gloo for CPU work, ``cpu:gloo,cuda:nccl`` when ``device`` is a GPU. A no-op otherwise."""
    ctx = launch_context()
    if not ctx.enabled or dist.is_initialized():
        return ctx
    if not dist.is_available():
        raise WspaceError("this torch build has no torch.distributed; run with one process")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise WspaceError(f"--device {device} was asked for but torch sees no GPU; use --device cpu")
        torch.cuda.set_device(torch.device(ctx.device(device)))
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=_timeout())
    except (ValueError, RuntimeError) as err:
        raise WspaceError(f"could not join the torch.distributed job (rank {ctx.rank} of "
                          f"{ctx.world_size}, backend {backend}): {err}. Launch with torchrun, e.g. "
                          f"`torchrun --nproc-per-node 2 -m wspace.cli ...`") from None
    atexit.register(teardown)
    return ctx


def teardown(finished: bool = False) -> None:
    """Leave the process group: the ``wspace`` command calls it when it ends, and ``setup``
    registers it to run at exit as well (a no-op once left).

    ``finished``: every rank completed its command, so all meet at a barrier first and leave
    together; after a failure a rank leaves at once (the others may never arrive). Objects still
    holding the group (a DistributedDataParallel wrapper in a reference cycle) are collected
    before it is destroyed: left to interpreter shutdown, gloo's threads outlive the group and
    the process aborts ("terminate called without an active exception")."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


# ---- collectives (identities in one process) -------------------------------------------------

def broadcast_object(obj: Any, ctx: DistContext | None = None) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    ctx = ctx or launch_context()
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, ctx: DistContext | None = None) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    ctx = ctx or launch_context()
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_across_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The sum over ranks of a CPU float64 tensor, then rank 0's result broadcast, so every rank
    holds bit-identical numbers (decisions taken on them agree)."""
    out = values.detach().to("cpu", torch.float64).clone()
    if ctx.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        dist.broadcast(out, src=0)
    return out


def broadcast_int(value: int, ctx: DistContext) -> int:
    """Rank 0's integer on every rank (e.g. the early-stopping counter)."""
    if not ctx.enabled:
        return value
    box = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(box, src=0)
    return int(box.item())


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not ctx.enabled:
        return flag
    box = torch.tensor([int(flag)], dtype=torch.int64)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


# ---- pretraining -----------------------------------------------------------------------------

def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batch sampler: ``seed`` itself on rank 0 (and in one process)."""
    return seed + rank * RANK_SEED_STRIDE


def local_batch_size(batch_size: int, ctx: DistContext) -> int:
    """This rank's share of an effective batch of ``batch_size`` networks (the shares sum to it)."""
    if batch_size < ctx.world_size:
        raise WspaceError(f"the batch of {batch_size} networks cannot be shared by {ctx.world_size} "
                          f"ranks; use --batch-size {ctx.world_size} or more, or fewer processes")
    base, extra = divmod(batch_size, ctx.world_size)
    return base + (1 if ctx.rank < extra else 0)


@attrs.frozen
class RankShare:
    """This process's part in a data-parallel pretraining: its share of every batch and of the
    evaluated networks, and the collectives that keep the ranks agreeing. In one process (no
    torchrun) every method is the identity of the single-process loop."""

    ctx: DistContext
    batch_size: int  # the effective batch: networks per step over all ranks
    local_batch: int  # this rank's share of it

    @classmethod
    def of(cls, ctx: DistContext, batch_size: int) -> "RankShare":
        return cls(ctx, batch_size, local_batch_size(batch_size, ctx))

    @property
    def loss_scale(self) -> float:
        """DDP averages the ranks' gradients; weighting each rank's mean loss by its share of the
        batch makes that the gradient of the mean over all ``batch_size`` networks (1.0 for
        equal shares and in one process)."""
        return self.local_batch * self.ctx.world_size / self.batch_size

    def sampler_seed(self, seed: int) -> int:
        return rank_seed(seed, self.ctx.rank)

    def wrap(self, module: nn.Module, device: torch.device, probe_loss: Callable[[], torch.Tensor]) -> nn.Module:
        return data_parallel(module, self.ctx, device, probe_loss)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of ``rows`` (sequential memory-mapped reads)."""
        return np.array_split(rows, self.ctx.world_size)[self.ctx.rank] if self.ctx.enabled else rows

    def mean(self, sums: dict[str, float], count: int) -> dict[str, float]:
        """Every rank's ``sums`` added up, divided by ``count``: the same numbers on every rank."""
        total = sum_across_ranks(torch.tensor(list(sums.values()), dtype=torch.float64), self.ctx)
        return {name: value / count for name, value in zip(sums, total.tolist())}

    def batch_loss(self, loss: torch.Tensor, reported: bool) -> float | None:
        """The mean training loss over the effective batch. In one process: ``loss`` itself, every
        step. Under torchrun: a collective taken at ``reported`` steps only (None at the others),
        the same value on every rank (so every rank takes the same decision on it)."""
        if not self.ctx.enabled:
            return loss.item()
        if not reported:
            return None
        total = sum_across_ranks(loss.detach().reshape(1) * self.local_batch, self.ctx)
        return total.item() / self.batch_size

    def agree(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (e.g. the early-stopping counter)."""
        return broadcast_int(value, self.ctx)

    def gather(self, obj: Any, collective: bool = True) -> list | None:
        """Every rank's ``obj`` under torchrun; None in one process, or when ``collective`` is false
        (after an interrupt the other ranks may be gone)."""
        return all_gather_object(obj, self.ctx) if self.ctx.enabled and collective else None


def _leaves_unused(module: nn.Module, probe_loss: Callable[[], torch.Tensor]) -> bool:
    """Whether one forward/backward (``probe_loss``) leaves a trainable parameter without a
    gradient. RNG states and buffers are restored, gradients cleared: nothing else changes."""
    module.zero_grad(set_to_none=True)
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    cuda = [p.device.index for p in module.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=cuda):
        probe_loss().backward()
    unused = any(p.requires_grad and p.grad is None for p in module.parameters())
    module.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(buffers[name])
    return unused


def data_parallel(module: nn.Module, ctx: DistContext, device: torch.device,
                  probe_loss: Callable[[], torch.Tensor]) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel (``module`` itself in one process). A probe
    step decides whether DDP must look for parameters a forward pass leaves unused."""
    if not ctx.enabled:
        return module
    unused = any_rank(_leaves_unused(module, probe_loss), ctx)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=unused)


def restore_rank_rng(state: dict, ctx: DistContext) -> dict | None:
    """The RNG states this rank resumes from in checkpoint ``state``: its own when the checkpoint
    holds one per rank of a job of this size, else rank 0 takes ``rng`` and the other ranks get
    None (they draw from fresh seeds; rank 0 warns). In one process: ``rng``."""
    if not ctx.enabled:
        return state["rng"]
    per_rank = state.get("rng_ranks")
    if per_rank is not None and len(per_rank) == ctx.world_size:
        return per_rank[ctx.rank]
    if ctx.is_main:
        held = len(per_rank) if per_rank is not None else 1
        warnings.warn(f"the checkpoint holds the batch samplers of {held} process(es) and is resumed by "
                      f"{ctx.world_size}: weights, optimiser and step carry over; ranks without a saved "
                      f"sampler draw their batches from fresh seeds", stacklevel=2)
    return state["rng"] if ctx.is_main else None


# ---- zoo build -------------------------------------------------------------------------------

def shard_num_models(num_models: int, chunk_size: int, ctx: DistContext) -> int:
    """How many of the zoo's networks this rank trains (its chunks ``chunk_id % W == rank``)."""
    num_chunks = -(-num_models // chunk_size)
    return sum(min(chunk_size, num_models - c * chunk_size)
               for c in range(num_chunks) if c % ctx.world_size == ctx.rank)


def _raise_first_failure(outcomes: list[str | None], what: str) -> None:
    failed = [(rank, msg) for rank, msg in enumerate(outcomes) if msg is not None]
    if failed:
        rank, msg = failed[0]
        ranks = ", ".join(str(r) for r, _ in failed)
        raise WspaceError(f"{what} failed on rank(s) {ranks}; rank {rank}: {msg}")


def build_zoo(config, out: str | os.PathLike, resume: bool = False, progress=None):
    """``wspace.zoo.build.build_zoo`` in one process; under torchrun every rank builds its
    shard into ``out`` (storage all ranks see), then rank 0 merges it in place. Every rank returns
    the complete zoo; a failure on any rank raises on all of them."""
    from wspace.zoo import build as zoo_build
    from wspace.zoo.merge import merge_zoos
    from wspace.zoo.store import Zoo

    if not launch_context().enabled:
        return zoo_build.build_zoo(config, out, resume=resume, progress=progress)
    ctx = setup(config.device)
    # the ranks on one machine share its cores (the zoo does not depend on the thread count)
    threads = max(1, zoo_build.default_workers(config.device) // ctx.local_world_size)
    error: Exception | None = None
    try:
        zoo_build.build_zoo(config, out, resume=resume, progress=progress,
                            rank=ctx.rank, world_size=ctx.world_size, workers=threads)
    except Exception as err:  # told to every rank below, then raised here as it is
        error = err
    outcomes = all_gather_object(None if error is None else _describe(error), ctx)
    if error is not None:
        raise error
    _raise_first_failure(outcomes, f"building the zoo shards in {out}")
    merged = None
    if ctx.is_main:  # every rank's writer is closed: no rank lock is held any more
        try:
            merged = merge_zoos([out], out)
        except Exception as err:
            error = err
    outcome = broadcast_object(None if error is None else _describe(error), ctx)
    if error is not None:
        raise error
    if outcome is not None:
        raise WspaceError(f"rank 0 could not merge the zoo shards in {out}: {outcome}")
    return merged if merged is not None else Zoo.open(Path(out), verify=False)


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__
