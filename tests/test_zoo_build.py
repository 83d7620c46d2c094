"""The batched zoo builder: batched == single-model builds, determinism, resume, presets,
the optimiser, and that training really trains."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wspace_core import plugins
from wspace_core.hookspecs import hookimpl
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, PropertySpec, TaskFamily, TrainingSchedule
from wspace.zoo import Zoo, ZooWriter
from wspace.presets import zoo_preset
from wspace.zoo.build import BuildProgress, ZooConfig, assign_tasks, build_zoo, preset_config, scaled_schedule
from wspace_core.presets import PRESETS
from wspace.zoo.train import BatchedAdamW, split_groups

ARRAYS = ("weights", "rollout_inputs", "rollout_outputs", "metadata")


class PreviousToken(TaskFamily):
    """Tiny fake family: output at step t is the input token at step t - lag (0 before that).
    lag 1 and 2: train, 3: validation, 0: ood. Weight decay differs per lag (as MNIST's does)."""

    name = "previous_token"
    input_kind = "onehot"
    output_kind = "categorical"
    task_columns = ("lag",)
    metric_columns = ("performance", "loss")
    LAGS = {"train": (1, 2), "validation": (3,), "ood": (0,)}

    def __init__(self, vocab: int = 4, length: int = 8, num_eval: int = 16):
        self.vocab, self.num_eval = vocab, num_eval
        self.input_size = self.output_size = vocab
        self.sequence_length = length

    def settings(self):
        return {"vocab": self.vocab, "length": self.sequence_length, "num_eval": self.num_eval}

    def sample_tasks(self, num_models, generator, split=None):
        lags = sum(self.LAGS.values(), ()) if split is None else self.LAGS[split]
        index = torch.randint(len(lags), (num_models,), generator=generator)
        return torch.tensor(lags, dtype=torch.float64)[index][:, None]

    def split_of(self, tasks):
        return [next(s for s, lags in self.LAGS.items() if int(t) in lags) for t in tasks[:, 0].tolist()]

    def weight_decay(self, tasks, schedule):
        return schedule.weight_decay * (1 + tasks[:, 0]).float()

    def _tokens(self, n, generators):
        return torch.stack([torch.randint(self.vocab, (n, self.sequence_length), generator=g) for g in generators])

    def _targets(self, tokens, tasks):
        out = torch.zeros_like(tokens)
        for m, lag in enumerate(tasks[:, 0].long().tolist()):
            out[m, :, lag:] = tokens[m, :, : tokens.shape[2] - lag]
        return out

    def training_batch(self, tasks, batch_size, generators, device="cpu"):
        tokens = self._tokens(batch_size, generators)  # (M, B, T)
        return F.one_hot(tokens, self.vocab).float().to(device), self._targets(tokens, tasks).to(device)

    def training_loss(self, outputs, targets):
        logp = F.log_softmax(outputs, -1)
        return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).flatten(1).mean(1)

    def evaluate(self, arch, params, tasks, generators):
        x, y = self.training_batch(tasks, self.num_eval, generators)
        out, _ = arch.forward(params, x)
        return {"performance": (out.argmax(-1) == y).float().flatten(1).mean(1),
                "loss": self.training_loss(out, y)}

    def rollouts(self, arch, params, tasks, num_rollouts, generators):
        tokens = self._tokens(num_rollouts, generators)
        out, _ = arch.forward(params, F.one_hot(tokens, self.vocab).float())
        return tokens, F.log_softmax(out, -1)

    def properties(self):
        return (PropertySpec("lag", "categorical", ("lag",), num_classes=4),)


@pytest.fixture
def fake_family(register_plugin):
    module = types.ModuleType("wspace_test_previous_token")

    @hookimpl
    def register_task_families(register):
        register("previous_token", PreviousToken)

    module.register_task_families = register_task_families
    register_plugin(module, name="wspace_test_previous_token")
    return PreviousToken


def _config(**overrides) -> ZooConfig:
    values = dict(num_models=6, chunk_size=3, steps=24, num_rollouts=3, seed=5)
    values.update(overrides)
    return preset_config("previous_token", "smoke", **values)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    return {name: np.load(path / f"{name}.npy") for name in ARRAYS}


def _column(zoo: Zoo, name: str) -> np.ndarray:
    return zoo.metadata[name]


# ---- batched == single, determinism, resume ---------------------------------------------------


def test_batched_build_equals_single_model_builds(fake_family, tmp_path):
    batched = build_zoo(_config(chunk_size=6), tmp_path / "batched", workers=1, group_size=6)
    single = build_zoo(_config(chunk_size=1), tmp_path / "single", workers=1)
    assert batched.num_rows == single.num_rows == 6 * len(batched.snapshot_steps)
    np.testing.assert_allclose(batched.weights, single.weights, rtol=0, atol=2e-5)
    np.testing.assert_allclose(np.asarray(batched.rollout_outputs, np.float32),
                               np.asarray(single.rollout_outputs, np.float32), atol=2e-2)
    np.testing.assert_array_equal(batched.rollout_inputs, single.rollout_inputs)
    for column in ("model", "snapshot", "step", "split", "lag"):
        np.testing.assert_array_equal(batched.metadata[column], single.metadata[column])
    np.testing.assert_allclose(batched.metadata["loss"], single.metadata["loss"], atol=1e-4)
    # and training did move the weights between snapshots
    w = np.asarray(batched.weights).reshape(6, -1, batched.weights.shape[1])
    assert np.abs(w[:, -1] - w[:, 0]).max() > 1e-2


def test_worker_processes_and_groups_do_not_change_the_zoo(fake_family, tmp_path):
    one = build_zoo(_config(chunk_size=6), tmp_path / "one", workers=1, group_size=6)
    spread = build_zoo(_config(chunk_size=6), tmp_path / "spread", workers=2, group_size=2)
    np.testing.assert_allclose(one.weights, spread.weights, rtol=0, atol=2e-5)
    np.testing.assert_array_equal(one.rollout_inputs, spread.rollout_inputs)
    np.testing.assert_array_equal(one.metadata["split"], spread.metadata["split"])


def test_same_command_twice_gives_identical_bytes(fake_family, tmp_path):
    build_zoo(_config(), tmp_path / "a")
    build_zoo(_config(), tmp_path / "b")
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    for name in ARRAYS:
        assert a[name].tobytes() == b[name].tobytes(), name
    # a different seed gives a different zoo
    build_zoo(_config(seed=6), tmp_path / "c")
    assert _arrays(tmp_path / "c")["weights"].tobytes() != a["weights"].tobytes()


class _StopAfterFirstChunk(Exception):
    pass


@pytest.mark.parametrize("error, workers", [(_StopAfterFirstChunk, 1), (KeyboardInterrupt, 1), (KeyboardInterrupt, 2)])
def test_resume_after_interruption_equals_uninterrupted_build(fake_family, tmp_path, error, workers):
    seen: list[BuildProgress] = []

    def stop_after_first_chunk(p: BuildProgress):
        seen.append(p)
        if p.chunks_done == 1:
            raise error()

    run = dict(workers=workers, group_size=1)  # 3 groups per chunk: worker processes when workers > 1
    with pytest.raises(error):
        build_zoo(_config(), tmp_path / "resumed", progress=stop_after_first_chunk, **run)
    assert seen[-1].chunks_done == 1 and seen[-1].chunks_total == 2
    # the lock is released and exactly one chunk is committed
    with ZooWriter.create(tmp_path / "resumed", _manifest_of(tmp_path / "resumed"), resume=True) as writer:
        assert writer.committed_chunks() == {0}
    progress: list[BuildProgress] = []
    resumed = build_zoo(_config(), tmp_path / "resumed", resume=True, progress=progress.append, **run)
    assert progress[-1].model_steps_done == progress[-1].model_steps_total == 3 * 24  # one chunk left
    full = build_zoo(_config(), tmp_path / "full")
    for name in ARRAYS:
        assert _arrays(resumed.path)[name].tobytes() == _arrays(full.path)[name].tobytes(), name


def test_a_worker_killed_outright_is_an_error_and_resume_finishes(fake_family, tmp_path, monkeypatch):
    """multiprocessing.Pool replaces a worker killed by SIGKILL (the OOM killer) and would wait for
    its group forever; the build says so instead, keeps the committed chunks, and --resume ends
    in the zoo an uninterrupted build gives."""
    import multiprocessing as mp
    import os
    import signal

    import wspace.zoo.build as build_module

    monkeypatch.setattr(build_module, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(build_module, "WORKER_CHECK_S", 0.2)
    config, run = _config(steps=400), dict(workers=2, group_size=1)

    def kill_the_workers_in_the_second_chunk(p: BuildProgress):
        if p.chunks_done == 1 and p.model_steps_done > p.model_steps_total // 2:
            for child in mp.active_children():
                os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(WspaceError, match="worker process training models .* ended without a result.*--resume"):
        build_zoo(config, tmp_path / "killed", progress=kill_the_workers_in_the_second_chunk, **run)
    assert mp.active_children() == []
    resumed = build_zoo(config, tmp_path / "killed", resume=True, **run)
    full = build_zoo(config, tmp_path / "full", workers=1)
    for name in ARRAYS:
        assert _arrays(resumed.path)[name].tobytes() == _arrays(full.path)[name].tobytes(), name


def _manifest_of(path: Path) -> dict:
    import json

    return json.loads((path / "manifest.json").read_text())


def test_existing_zoo_needs_resume(fake_family, tmp_path):
    build_zoo(_config(), tmp_path / "z")
    with pytest.raises(WspaceError, match="resume"):
        build_zoo(_config(), tmp_path / "z")


def test_execution_settings_are_checked(fake_family, tmp_path):
    with pytest.raises(WspaceError, match="workers"):
        build_zoo(_config(), tmp_path / "a", workers=0)
    with pytest.raises(WspaceError, match="group_size"):
        build_zoo(_config(), tmp_path / "b", group_size=0)
    with pytest.raises(WspaceError, match="not both"):
        build_zoo(_config(), tmp_path / "c", workers=1, threads=2)
    assert build_zoo(_config(), tmp_path / "d", threads=1).num_models == 6  # the former name of workers


def test_rank_builds_only_its_chunks(fake_family, tmp_path):
    assert build_zoo(_config(), tmp_path / "shard", rank=1, world_size=2) is None
    with pytest.raises(WspaceError):
        build_zoo(_config(), tmp_path / "bad", rank=2, world_size=2)


# ---- the zoo's content ------------------------------------------------------------------------


def test_zoo_rows_metadata_and_splits(fake_family, tmp_path):
    config = _config(num_models=20, chunk_size=10, split_fractions=(0.5, 0.25, 0.25))
    zoo = build_zoo(config, tmp_path / "z")
    S = len(config.schedule.snapshot_steps)
    assert zoo.snapshot_steps == list(config.schedule.snapshot_steps)
    assert zoo.manifest["metadata_columns"] == ["model", "snapshot", "step", "split", "lag", "performance", "loss"]
    meta = zoo.metadata
    np.testing.assert_array_equal(meta["model"], np.repeat(np.arange(20), S))
    np.testing.assert_array_equal(meta["step"], np.tile(config.schedule.snapshot_steps, 20))
    split = meta["split"][::S].astype(int)
    assert np.bincount(split, minlength=3).tolist() == [10, 5, 5]
    family = PreviousToken()
    assert family.split_of(torch.from_numpy(meta["lag"][::S, None])) == [SPLITS[s] for s in split]
    assert zoo.weights.shape == (20 * S, zoo.architecture().layout.num_params)
    assert zoo.rollout_inputs.shape == (20 * S, 3, 8) and zoo.rollout_inputs.dtype == np.int16
    assert zoo.rollout_outputs.shape == (20 * S, 3, 8, 4)
    # the stored weights are the network that produced the stored rollouts
    arch, row = zoo.architecture(), 3
    params = arch.layout.unflatten(torch.from_numpy(np.array(zoo.weights[row:row + 1])))
    x = F.one_hot(torch.from_numpy(np.array(zoo.rollout_inputs[row:row + 1])).long(), 4).float()
    with torch.no_grad():
        out = F.log_softmax(arch.forward(params, x)[0], -1)
    np.testing.assert_allclose(out.numpy(), np.asarray(zoo.rollout_outputs[row:row + 1], np.float32), atol=2e-3)


def test_task_assignment_depends_only_on_the_seed(fake_family):
    family = PreviousToken()
    a = assign_tasks(family, _config(chunk_size=1))
    b = assign_tasks(family, _config(chunk_size=6))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    c = assign_tasks(family, _config(seed=99))
    assert not (np.array_equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_training_reduces_the_loss(fake_family, tmp_path):
    zoo = build_zoo(_config(num_models=4, chunk_size=4, steps=120, split_fractions=(1.0, 0.0, 0.0)),
                    tmp_path / "z")
    S = len(zoo.snapshot_steps)
    loss = zoo.metadata["loss"].reshape(4, S)
    perf = zoo.metadata["performance"].reshape(4, S)
    assert (loss[:, -1] < 0.7 * loss[:, 0]).all(), loss
    assert perf[:, -1].mean() > perf[:, 0].mean() + 0.2, perf


# ---- optimiser ---------------------------------------------------------------------------------


def test_batched_adamw_equals_torch_adamw_per_model():
    gen = torch.Generator().manual_seed(0)
    M, decay = 3, torch.tensor([0.0, 1e-2, 0.5])
    params = {"w": torch.randn(M, 4, 5, generator=gen), "b": torch.randn(M, 5, generator=gen)}
    refs = [{k: torch.nn.Parameter(v[m].clone()) for k, v in params.items()} for m in range(M)]
    opts = [torch.optim.AdamW(list(r.values()), lr=0.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=float(decay[m]))
            for m, r in enumerate(refs)]
    ours = BatchedAdamW({k: v.clone() for k, v in params.items()}, decay)
    schedule = scaled_schedule(20)
    for step in range(20):
        grads = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
        lr = schedule.lr_at(step)
        ours.step(grads, lr)
        for m, (ref, opt) in enumerate(zip(refs, opts)):
            for group in opt.param_groups:
                group["lr"] = lr
            for k, p in ref.items():
                p.grad = grads[k][m].clone()
            opt.step()
    for m, ref in enumerate(refs):
        for k, p in ref.items():
            torch.testing.assert_close(ours.params[k][m], p.detach(), rtol=0, atol=1e-6)


def test_weight_decay_must_have_one_value_per_model():
    with pytest.raises(WspaceError, match="one value per model"):
        BatchedAdamW({"w": torch.zeros(3, 2)}, torch.zeros(2))


def test_split_groups_cover_all_models():
    assert split_groups(7, 3) == [range(0, 2), range(2, 5), range(5, 7)]
    assert split_groups(2, 8) == [range(0, 1), range(1, 2)]


# ---- presets and overrides ---------------------------------------------------------------------


def test_presets_have_the_required_shape():
    for preset in PRESETS:
        config = preset_config("formal_languages", preset)
        assert (config.hidden_size, config.num_layers, config.schedule.batch_size) == (32, 2, 32)
    paper = preset_config("formal_languages", "paper")
    assert paper.num_models == 1000 and paper.schedule.steps == 20_000 and paper.num_rollouts == 100
    assert paper.schedule.snapshot_steps == (0, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
    assert paper.schedule.lr_points == ((0, 0.01), (10_000, 0.003), (20_000, 0.0003))
    assert preset_config("formal_languages", "paper", device="cuda").chunk_size == 1000
    assert preset_config("formal_languages", "paper").chunk_size < 1000


def test_overrides_win_and_steps_scale_the_schedule():
    config = preset_config("formal_languages", "quick", steps=2000, num_models=10, seed=3, device="cpu")
    quick_fl = zoo_preset("formal_languages", "quick", "cpu")["task_settings"]
    assert (config.num_models, config.seed, config.chunk_size) == (10, 3, 10)  # chunk shrinks to fit
    assert config.schedule.steps == 2000  # the quick formal-languages zoo's own fractions, scaled
    assert config.schedule.snapshot_steps == (0, 100, 200, 500, 1000, 1400, 1700, 2000)
    assert config.schedule.lr_points == ((0, 0.02), (1400, 0.02), (2000, 0.002))
    paper_scaled = preset_config("formal_languages", "smoke", steps=2000).schedule  # the paper's, scaled
    assert paper_scaled.snapshot_steps == (0, 10, 20, 50, 100, 200, 500, 1000, 2000)
    assert paper_scaled.lr_points == ((0, 0.01), (1000, 0.003), (2000, 0.0003))
    assert config.task_settings == quick_fl
    merged = preset_config("formal_languages", "quick", task_settings={"max_n": 12})
    assert merged.task_settings == {**quick_fl, "max_n": 12}
    mnist = preset_config("tiled_mnist", "quick")
    assert mnist.num_models == zoo_preset("tiled_mnist", "quick", "cpu")["num_models"] == mnist.chunk_size
    assert preset_config("tiled_mnist", "quick", num_models=50, chunk_size=10).num_models == 50
    schedule = TrainingSchedule(steps=7, snapshot_steps=(0, 7))
    assert preset_config("formal_languages", "smoke", schedule=schedule).schedule == schedule
    tiny = scaled_schedule(3)
    assert tiny.snapshot_steps == (0, 1, 2, 3) and [s for s, _ in tiny.lr_points] == [0, 2, 3]
    own = preset_config("formal_languages", "quick", steps=400, snapshot_fractions=[0, 0.1, 0.25, 0.5, 1],
                        lr_fractions=[[0, 0.01], [0.7, 0.01], [1, 0.001]])
    assert own.schedule.snapshot_steps == (0, 40, 100, 200, 400)
    assert own.schedule.lr_points == ((0, 0.01), (280, 0.01), (400, 0.001))
    assert own.schedule.lr_at(140) == 0.01 and own.schedule.lr_at(340) == pytest.approx(0.0055)
    assert scaled_schedule(3, snapshot_fractions=(0, 0.4, 0.5, 1)).snapshot_steps == (0, 1, 2, 3)  # 1.2, 1.5 -> 1, 2


@pytest.mark.parametrize("overrides, match", [
    (dict(num_models=0), "num_models"),
    (dict(num_models=4, chunk_size=5), "chunk_size"),
    (dict(steps=0), "steps"),
    (dict(num_rollouts=-1), "num_rollouts"),
    (dict(split_fractions=(0.5, 0.5, 0.5)), "split_fractions"),
    (dict(seed=-1), "seed"),
    (dict(schedule=TrainingSchedule(steps=5, snapshot_steps=(0, 9))), "snapshot_steps"),
    (dict(hidden=32), "unknown zoo setting"),
    (dict(steps=10, schedule=TrainingSchedule(steps=5, snapshot_steps=(0, 5))), "either steps or schedule"),
])
def test_impossible_settings_fail_with_a_wspace_error(overrides, match):
    with pytest.raises(WspaceError, match=match):
        preset_config("formal_languages", "smoke", **overrides)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(WspaceError, match="smoke, quick, paper"):
        preset_config("formal_languages", "huge")


# ---- the real task families (smoke scale) -------------------------------------------------------


def _family_or_skip(name: str):
    if name not in plugins.task_families():
        pytest.skip(f"task family {name} is not installed")


def test_formal_languages_smoke_build_trains(tmp_path):
    _family_or_skip("formal_languages")
    config = preset_config("formal_languages", "smoke", num_models=4, chunk_size=4, steps=150,
                           split_fractions=(1.0, 0.0, 0.0))
    zoo = build_zoo(config, tmp_path / "fl")
    S = len(zoo.snapshot_steps)
    assert zoo.num_rows == 4 * S and zoo.rollout_inputs.dtype == np.int16
    # the training loss of the stored weights falls: measure it on fresh batches
    arch, family = zoo.architecture(), zoo.task_family()
    tasks = torch.from_numpy(np.stack([zoo.metadata[c] for c in family.task_columns], 1))
    gens = [torch.Generator().manual_seed(m) for m in range(4 * S)]
    x, y = family.training_batch(tasks, 64, gens)
    with torch.no_grad():
        loss = family.training_loss(arch.forward(arch.layout.unflatten(torch.from_numpy(np.array(zoo.weights))),
                                                 x)[0], y).reshape(4, S)
    assert (loss[:, -1] < 0.6 * loss[:, 0]).all(), loss


def test_zoo_build_command_takes_task_settings(tmp_path):
    from click.testing import CliRunner

    from wspace.cli import cli

    _family_or_skip("formal_languages")
    out = tmp_path / "zoo"
    result = CliRunner().invoke(cli, ["zoo", "build", "--task", "formal_languages", "--preset", "smoke",
                                      "--num-models", "3", "--task-setting", "num_eval_strings=8",
                                      "--task-setting", "max_n=6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    zoo = Zoo.open(out)
    assert zoo.manifest["build"]["task_settings"] == {"num_eval_strings": 8, "max_n": 6}
    assert zoo.task_family().settings()["max_n"] == 6  # the zoo's family is built with them


def test_zoo_build_command_reads_the_zoo_table_of_a_config_file(tmp_path):
    from click.testing import CliRunner

    from wspace.cli import cli

    _family_or_skip("formal_languages")
    config = tmp_path / "zoo.toml"
    config.write_text("[zoo]\nnum_models = 6\nchunk_size = 3\nsteps = 20\nseed = 4\n"
                      "snapshot_fractions = [0, 0.5, 1]\nlr_fractions = [[0, 0.02], [1, 0.002]]\n"
                      "[zoo.task_settings]\nlanguage_draw = \"cover\"\nnum_eval_strings = 8\n"
                      "[pretrain]\nsteps = 3\n")  # other tables are the run's, not the zoo's
    out = tmp_path / "zoo"
    result = CliRunner().invoke(cli, ["zoo", "build", "--task", "formal_languages", "--preset", "smoke",
                                      "--config", str(config), "--num-models", "4", "--chunk-size", "2",
                                      "--task-setting", "num_eval_strings=6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    build = Zoo.open(out).manifest["build"]
    assert (build["num_models"], build["chunk_size"], build["seed"]) == (4, 2, 4)  # flags win; the file's seed
    assert build["schedule"]["snapshot_steps"] == [0, 10, 20]
    assert build["schedule"]["lr_points"] == [[0, 0.02], [20, 0.002]]
    assert build["task_settings"] == {"num_eval_strings": 6, "language_draw": "cover"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[zoo]\nsnapshot_fractions = [1, 0]\n")
    result = CliRunner().invoke(cli, ["zoo", "build", "--task", "formal_languages", "--preset", "smoke",
                                      "--config", str(bad), "--out", str(tmp_path / "never")])
    assert result.exit_code != 0 and "snapshot_fractions must be \"paper\" or increasing" in result.output
    assert not (tmp_path / "never").exists()
