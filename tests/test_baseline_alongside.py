"""The no-information baseline trained alongside the encoder in a worker process
(``wspace.experiment.baseline``): the same figures as training it before, its cache written once,
the torch thread given back, a worker's error raised in the parent, nothing left running."""

from __future__ import annotations

import json
import multiprocessing as mp
import time

import attrs
import pytest
import torch
from click.testing import CliRunner

from wspace.cli import cli
from wspace.config import resolve
from wspace.experiment.baseline import BaselineAlongside, baseline_path, runs_alongside
from wspace.experiment.run import run
from wspace.experiment.zoos import ensure_zoo
from wspace.training.distributed import DistContext
from wspace_core.registry import WspaceError


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A smoke configuration (tracking off) and its zoo, built once."""
    out = tmp_path_factory.mktemp("alongside")
    config = resolve(preset="smoke", encoder="layerwise_statistics", out_dir=str(out), tracking=False)
    zoo = ensure_zoo(config, lambda message: None)
    return config, zoo


def _numbers(data, prefix: str = "") -> dict[str, float]:
    """The numbers of nested dictionaries, by their path of keys."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _numbers(value, f"{prefix}/{key}").items()}
    return {prefix: data} if isinstance(data, (int, float)) and not isinstance(data, bool) else {}


def _figures(results: dict) -> dict[str, float]:
    """The baseline's losses and emulation fidelity, and the encoder's losses."""
    return _numbers({"baseline": {"metrics": results["baseline"]["metrics"],
                                  "fidelity": results["baseline"]["emulation_fidelity"]},
                     "encoder": results["encoder_result"]["metrics"]})


@pytest.mark.slow
def test_alongside_gives_the_figures_of_before_and_caches_them(smoke, two_threads):
    config, zoo = smoke
    said = []
    before = run(attrs.evolve(config, baseline="before"), echo=said.append)
    path = baseline_path(config, zoo.fingerprint)
    assert any(m.startswith("training the no-information baseline (z carries") for m in said)
    cached = json.loads(path.read_text())
    path.unlink()

    said.clear()
    steps = []
    along = run(config, echo=said.append, pretrain_progress=lambda p: steps.append(torch.get_num_threads()))
    assert config.baseline == "alongside"
    assert any("alongside the encoder, in a worker process with 1 of the 2 torch threads" in m for m in said)
    assert torch.get_num_threads() == 2  # given back
    assert steps and set(steps) <= {1, 2}  # the encoder trained with the thread left, then with both
    assert _numbers(json.loads(path.read_text())) == pytest.approx(_numbers(along["baseline"]), nan_ok=True)
    assert set(along["baseline"]) == set(cached)  # cached once known, as "before" caches it
    first, second = _figures(before), _figures(along)
    assert len(first) > 20 and set(first) == set(second)
    assert second == pytest.approx(first, rel=1e-4, abs=1e-6, nan_ok=True)

    said.clear()
    run(config, echo=said.append)  # the cache serves the next run
    assert any(m.startswith("reusing the no-information baseline") for m in said)
    assert not mp.active_children()


def test_alongside_only_where_a_worker_pays(two_threads):
    config = resolve(preset="smoke")
    assert config.baseline == "alongside" and runs_alongside(config, DistContext())
    assert not runs_alongside(attrs.evolve(config, baseline="before"), DistContext())
    assert not runs_alongside(attrs.evolve(config, device="cuda"), DistContext())
    assert not runs_alongside(config, DistContext(rank=0, world_size=2))
    torch.set_num_threads(1)
    assert not runs_alongside(config, DistContext())


def test_a_worker_error_is_raised_in_the_parent_and_nothing_is_saved(tmp_path, two_threads):
    saved = []
    job = BaselineAlongside(tmp_path / "no_zoo_here", resolve(preset="smoke"), saved.append)
    assert torch.get_num_threads() == 1  # one thread left to the encoder while the worker runs
    try:
        with pytest.raises(WspaceError, match="no_zoo_here"):
            job.result()
    finally:
        job.close()
    assert saved == [] and torch.get_num_threads() == 2 and not mp.active_children()


def test_a_worker_killed_outright_is_an_error_not_a_wait_forever(smoke, two_threads):
    import os
    import signal

    config, zoo = smoke
    saved = []
    job = BaselineAlongside(zoo.path, attrs.evolve(config, pretrain=attrs.evolve(config.pretrain, steps=10**6)),
                            saved.append)
    try:
        while not job.pids.pids[0]:  # the worker has started the baseline
            time.sleep(0.05)
        os.kill(job.pids.pids[0], signal.SIGKILL)  # the OOM killer
        with pytest.raises(WspaceError, match="baseline's worker process ended without a result"):
            job.result()
    finally:
        job.close()
    assert saved == [] and torch.get_num_threads() == 2 and not mp.active_children()


def test_the_thread_comes_back_when_the_worker_is_done_and_close_stops_a_running_one(smoke, two_threads):
    config, zoo = smoke
    told = []
    job = BaselineAlongside(zoo.path, config, lambda summary: None)
    try:
        report = job.progress(told.append)
        report("step 1")
        job.pending.wait(120)
        report("step 2")
        assert told == ["step 1", "step 2"] and torch.get_num_threads() == 2
    finally:
        job.close()
    long = BaselineAlongside(zoo.path, attrs.evolve(config, pretrain=attrs.evolve(config.pretrain, steps=10**6)),
                             lambda summary: None)
    assert mp.active_children()
    long.close()  # an error or Ctrl-C in the parent: the worker is stopped, the thread given back
    assert not mp.active_children() and torch.get_num_threads() == 2


def test_the_baseline_flag_is_a_choice(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--preset", "smoke", "--baseline", "later", "--out-dir",
                                      str(tmp_path), "--no-tracking"])
    assert result.exit_code == 2 and "'later' is not one of 'alongside', 'before'" in result.output
    assert not any(tmp_path.iterdir())


def test_ctrl_c_in_the_encoder_stops_the_worker_and_caches_nothing(smoke, two_threads, tmp_path):
    config, zoo = smoke
    config = attrs.evolve(config, seed=5, out_dir=str(tmp_path))  # a baseline not cached yet

    def interrupt(update):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(attrs.evolve(config, zoo_path=str(zoo.path)), echo=lambda m: None, pretrain_progress=interrupt)
    assert not mp.active_children() and torch.get_num_threads() == 2
    assert not baseline_path(config, zoo.fingerprint).exists()
