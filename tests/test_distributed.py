"""torch.distributed: the launch context and its helpers in one process, and real 2-process runs
with the gloo backend (torchrun as `python -m torch.distributed.run`): a sharded zoo build that
must equal a single-process build byte for byte, DDP pretraining whose ranks must stay in sync,
and `wspace run` under torchrun logging one MLflow run from rank 0."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wspace.training import distributed
from wspace.training.distributed import DistContext
from wspace_core.registry import WspaceError
from wspace.zoo import Zoo
from wspace.zoo.manifest import ARRAY_NAMES

LAUNCH = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
ZOO_ARGS = ["zoo", "build", "--task", "formal_languages", "--preset", "smoke", "--seed", "5"]


# ---- one process ---------------------------------------------------------------------------------

def test_without_torchrun_variables_one_process_and_nothing_initialised(monkeypatch):
    for name in LAUNCH:
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    assert ctx == DistContext(0, 1, 0) and not ctx.enabled and ctx.is_main
    assert not torch.distributed.is_initialized()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    assert ctx.device("cuda") == "cuda"  # one process: the device is kept as given


def test_torchrun_variables_give_rank_world_and_device(monkeypatch):
    for name, value in zip(LAUNCH, ("3", "4", "1")):
        monkeypatch.setenv(name, value)
    ctx = distributed.launch_context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (3, 4, 1)
    assert ctx.enabled and not ctx.is_main and not distributed.is_main()
    assert ctx.device("cuda") == "cuda:1" and ctx.device("cpu") == "cpu" and ctx.device("cuda:0") == "cuda:0"
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert not distributed.setup("cpu").enabled  # torchrun with one process: nothing changes
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(WspaceError, match="RANK < WORLD_SIZE"):
        distributed.launch_context()
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(WspaceError, match="not an integer"):
        distributed.launch_context()


@pytest.mark.parametrize("batch, world", [(16, 2), (9, 2), (7, 3), (5, 5)])
def test_batch_shares_add_up_to_the_effective_batch(batch, world):
    shares = [distributed.local_batch_size(batch, DistContext(r, world)) for r in range(world)]
    assert sum(shares) == batch and max(shares) - min(shares) <= 1
    with pytest.raises(WspaceError, match="--batch-size"):
        distributed.local_batch_size(world - 1, DistContext(0, world))


@pytest.mark.parametrize("num_models, chunk_size, world", [(12, 6, 2), (13, 4, 3), (5, 5, 2)])
def test_shards_cover_every_model_once(num_models, chunk_size, world):
    counts = [distributed.shard_num_models(num_models, chunk_size, DistContext(r, world)) for r in range(world)]
    assert sum(counts) == num_models


def test_rank_seeds_differ_and_rank_zero_keeps_the_seed():
    assert distributed.rank_seed(7, 0) == 7
    assert len({distributed.rank_seed(7, r) for r in range(4)}) == 4


def test_resume_rng_per_rank():
    rng = [{"generator": torch.tensor([r])} for r in range(2)]
    state = {"rng": rng[0], "rng_ranks": rng}
    assert distributed.restore_rank_rng(state, DistContext(1, 2)) is rng[1]
    with pytest.warns(UserWarning, match="fresh seeds"):
        assert distributed.restore_rank_rng(state, DistContext(0, 3)) is rng[0]
    assert distributed.restore_rank_rng(state, DistContext(2, 3)) is None
    assert distributed.restore_rank_rng({"rng": rng[0]}, DistContext(1, 2)) is None


class _Partly(nn.Module):
    def __init__(self, use_second: bool):
        super().__init__()
        self.first, self.second = nn.Linear(3, 2), nn.Linear(3, 2)
        self.register_buffer("count", torch.zeros(()))
        self.use_second = use_second

    def forward(self, x):
        self.count += 1
        out = self.first(x) + 0.1 * torch.randn(2)  # draws from the global generator
        return out + self.second(x) if self.use_second else out


@pytest.mark.parametrize("use_second", [True, False])
def test_probe_finds_unused_parameters_and_changes_nothing(use_second):
    torch.manual_seed(0)
    module = _Partly(use_second)
    before = torch.get_rng_state()
    unused = distributed._leaves_unused(module, lambda: module(torch.ones(4, 3)).sum())
    assert unused is (not use_second)
    assert torch.equal(torch.get_rng_state(), before)
    assert module.count.item() == 0 and all(p.grad is None for p in module.parameters())


# ---- two processes (gloo) ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH + ("MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _run(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-6000:]}"
    return done


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", str(_free_port()), *args]


@pytest.fixture(scope="module")
def single_zoo(tmp_path_factory) -> Path:
    """The smoke zoo built by one process (same thread settings as the torchrun ranks)."""
    root = tmp_path_factory.mktemp("single")
    _run([sys.executable, "-m", "wspace.cli", *ZOO_ARGS, "--out", str(root / "zoo")], root)
    return root / "zoo"


@pytest.mark.slow
def test_two_rank_zoo_build_equals_the_single_process_build(single_zoo, tmp_path):
    out = tmp_path / "zoo"
    done = _run(_torchrun("-m", "wspace.cli", *ZOO_ARGS, "--out", str(out)), tmp_path)
    assert done.stdout.count("zoo complete") == 1  # rank 0 alone reports
    one, two = Zoo.open(single_zoo, verify=True), Zoo.open(out, verify=True)
    assert one.fingerprint == two.fingerprint
    for name in ARRAY_NAMES:
        assert np.array_equal(one._arrays[name], two._arrays[name]), name
        assert one.manifest["arrays"][name]["sha256"] == two.manifest["arrays"][name]["sha256"], name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single_zoo.iterdir())


PRETRAIN_SCRIPT = textwrap.dedent('''
    import hashlib, json, sys
    from pathlib import Path
    import torch
    from wspace.training import distributed
    from wspace.config import PretrainConfig
    from wspace.presets import PRETRAIN_PRESETS
    from wspace.training.pretrain import pretrain
    from wspace.zoo import Zoo

    zoo_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    zoo = Zoo.open(zoo_path)
    rank = distributed.launch_context().rank
    # wspace's masked reverse KL: with it these settings stop early (what the test exercises)
    base = {**PRETRAIN_PRESETS["smoke"], "steps": 24, "batch_size": 9, "eval_every": 6, "checkpoint_every": 12,
            "objective": "reverse_kl", "loss_positions": "masked"}

    def train(checkpoint_dir=None, resume=False, log_metrics=None, **overrides):
        config = PretrainConfig(**{**base, **overrides})
        return pretrain(zoo, "flattened_weights", config, z_dim=8, preset="smoke", seed=1,
                        checkpoint_dir=checkpoint_dir, resume=resume, log_metrics=log_metrics)

    def digest(module):
        h = hashlib.sha256()
        for name, value in sorted(module.state_dict().items()):
            h.update(name.encode()), h.update(value.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    logged = []
    result = train(out / f"ckpt-rank{rank}", patience=1, lr=0.05,  # each rank its own dir: rank 0 alone writes
                   log_metrics=lambda metrics, step: logged.append([step, sorted(metrics)]))
    straight = train(patience=100)
    train(out / "shared", steps=12, patience=100)  # interrupted after 12 steps ...
    resumed = train(out / "shared", resume=True, patience=100)  # ... and resumed by both ranks
    (out / f"rank{rank}.json").write_text(json.dumps({
        "encoder": digest(result.encoder), "emulator": digest(result.emulator),
        "history": result.history, "best_step": result.best_step, "steps_done": result.steps_done,
        "stopped_early": result.stopped_early, "logged": logged,
        "straight": [digest(straight.encoder), digest(straight.emulator), straight.history],
        "resumed": [digest(resumed.encoder), digest(resumed.emulator), resumed.history]}))
''')


@pytest.mark.slow
def test_ddp_pretraining_keeps_ranks_in_sync_and_rank_zero_alone_writes(single_zoo, tmp_path):
    script = tmp_path / "pretrain_ddp.py"
    script.write_text(PRETRAIN_SCRIPT)
    _run(_torchrun(str(script), str(single_zoo), str(tmp_path)), tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["best_step"] > 0  # trained weights, not just the identical initial ones
    # lr 0.05 with patience 1 overshoots: the broadcast stop decision is exercised (stops at 18 of 24)
    assert ranks[0]["stopped_early"] and ranks[0]["steps_done"] < 24, "pick settings that stop early"
    for key in ("encoder", "emulator", "history", "best_step", "steps_done", "stopped_early"):
        assert ranks[0][key] == ranks[1][key], key  # parameters, evaluations and stopping agree
    assert ranks[1]["logged"] == [] and any("train/loss" in names for _, names in ranks[0]["logged"])
    assert any("validation/reverse_kl" in names for _, names in ranks[0]["logged"])
    assert not (tmp_path / "ckpt-rank1").exists()
    checkpoint = torch.load(tmp_path / "ckpt-rank0" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == ranks[0]["steps_done"] and len(checkpoint["rng_ranks"]) == 2
    assert not torch.equal(checkpoint["rng_ranks"][0]["generator"], checkpoint["rng_ranks"][1]["generator"])
    # every rank's sampler state is in the checkpoint: a job of the same size resumes exactly
    assert ranks[0]["resumed"] == ranks[0]["straight"] == ranks[1]["resumed"]


@pytest.mark.slow
def test_wspace_run_under_torchrun_logs_one_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs"
    # 12 networks: enough for every split and the OOD-half protocol whatever the smoke preset holds
    done = _run(_torchrun("-m", "wspace.cli", "run", "--preset", "smoke", "--zoo-models", "12",
                          "--encoder", "layerwise_statistics", "--out-dir", str(out), "--tracking-uri", uri),
                tmp_path)
    assert done.stderr.count("pretraining layerwise_statistics by emulation") == 1  # rank 0 alone echoes
    run_dirs = list((out / "runs").iterdir())
    assert len(run_dirs) == 1
    assert {"checkpoint.pt", "encoder.pt", "results.json", "config.json"} <= {p.name for p in run_dirs[0].iterdir()}
    results = json.loads((run_dirs[0] / "results.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [results["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED"
    Zoo.open(results["zoo"], verify=True)  # the zoo the ranks built together is complete
