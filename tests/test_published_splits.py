"""The published split protocol (wspace_core.splits): splits by task over a zoo's unique tasks,
the builder's use of it, and the downstream OOD halving by task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wspace_core import splits
from wspace.config import DownstreamConfig
from wspace.evaluation.downstream import ood_training_models, protocol_rows
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS
from wspace.zoo.build import assign_tasks, preset_config, task_for


def test_split_counts_follow_the_published_arithmetic():
    assert splits.split_counts(216, 0.15, 0.15) == (151, 32, 33)
    assert splits.split_counts(1000, 0.15, 0.15) == (700, 150, 150)
    assert splits.split_counts(12, 0.15, 0.15) == (8, 1, 3)
    assert splits.split_counts(4, 0.15, 0.15) == (2, 0, 2)


def test_ranked_splits_by_hand():
    # 6 unique tasks (one twice): criterion = the value; int(6 * 0.7) = 4 train, int(0.9) = 0
    # validation, 2 OOD: the two largest values. Networks with one task share its split.
    keys = np.array([[5.0], [1.0], [3.0], [6.0], [2.0], [4.0], [6.0]])
    names = splits.ranked_task_splits(keys, lambda k: k[:, 0], (0.7, 0.15, 0.15))
    assert names == ["ood", "train", "train", "ood", "train", "train", "ood"]
    # with 20 % validation: int(6 * 0.65) = 3 train, 1 validation; which one is RandomState(1)'s
    names = splits.ranked_task_splits(keys, lambda k: k[:, 0], (0.65, 0.2, 0.15))
    last = np.random.RandomState(splits.VALIDATION_SEED).permutation(4)[3]  # rank of the validation task
    assert names.count("validation") == 1
    assert keys[names.index("validation"), 0] == [1.0, 2.0, 3.0, 4.0][last]
    # the criterion, not the key order, decides: reversing it makes the smallest values OOD
    names = splits.ranked_task_splits(keys, lambda k: -k[:, 0], (0.7, 0.15, 0.15))
    assert [n == "ood" for n in names] == [False, True, False, False, True, False, False]


def test_ood_halving_by_task_by_hand():
    keys = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [4.0]])
    is_ood = np.array([False, True, True, True, True, True])  # 4 OOD tasks, task 4.0 twice
    half = splits.ood_training_half(keys, lambda k: k[:, 0], is_ood)
    ood_tasks = np.array([2.0, 3.0, 4.0, 5.0])  # in rank order
    to_training = set(ood_tasks[np.random.RandomState(splits.OOD_HALF_SEED).permutation(4)[2:]].tolist())
    assert half.tolist() == [False] + [k in to_training for k in [2.0, 3.0, 4.0, 5.0, 4.0]]
    assert half[3] == half[5]  # a task is never split
    with pytest.raises(WspaceError, match="at least 2"):
        splits.ood_training_half(keys, lambda k: k[:, 0], np.array([False, True, False, False, False, False]))


@pytest.mark.parametrize("task", ["formal_languages", "tiled_mnist"])
def test_builder_draws_all_tasks_then_splits_them_over_the_zoo(task):
    config = preset_config(task, "smoke", num_models=60, chunk_size=60)
    family = task_for(config)
    split, tasks = assign_tasks(family, config)
    assert family.split_scope() == "zoo"
    assert [SPLITS[s] for s in split] == family.split_zoo(tasks, config.split_fractions)
    again, tasks_again = assign_tasks(family, config)
    assert np.array_equal(split, again) and torch.equal(tasks, tasks_again)
    # every split holds whole tasks
    key = [tuple(row) for row in tasks[:, :1 if task == "tiled_mnist" else 3].tolist()]
    assert all(len({s for k2, s in zip(key, split) if k2 == k}) == 1 for k in key)
    # the wspace rule keeps the per-task flow: splits sized by network
    wspace = preset_config(task, "smoke", num_models=60, chunk_size=60, task_settings={"split_rule": "wspace"})
    split_w, _ = assign_tasks(task_for(wspace), wspace)
    assert np.bincount(split_w, minlength=3).tolist() == [42, 9, 9]


def test_published_angles_are_float32_uniforms_times_360():
    family = task_for(preset_config("tiled_mnist", "smoke"))
    tasks = family.sample_tasks(500, torch.Generator().manual_seed(0))
    u = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    assert torch.equal(tasks[:, 0], u.double() * 360)
    assert set(tasks[:, 1].tolist()) == {0.0, 0.001, 0.01, 0.1}
    with pytest.raises(WspaceError, match="split_zoo"):
        family.split_of(tasks)
    with pytest.raises(WspaceError, match="split=None"):
        family.sample_tasks(3, torch.Generator(), split="ood")


class _MetaZoo:
    """The part of a zoo the downstream protocol reads: metadata, rows, the task family."""

    def __init__(self, family, tasks, split, snapshots=2):
        M = len(tasks)
        self.path, self.family, self.rows_per_model = "memory", family, snapshots
        self.metadata = {"model": np.repeat(np.arange(M), snapshots).astype(float),
                         "snapshot": np.tile(np.arange(snapshots), M).astype(float),
                         "split": np.repeat(split, snapshots).astype(float)}
        for i, c in enumerate(family.task_columns):
            self.metadata[c] = np.repeat(tasks[:, i].numpy(), snapshots)

    def rows(self, split=None, snapshot=None):
        keep = np.ones(len(self.metadata["model"]), bool)
        if split is not None:
            keep &= self.metadata["split"] == SPLITS.index(split)
        if snapshot is not None:
            keep &= self.metadata["snapshot"] == snapshot % self.rows_per_model
        return np.flatnonzero(keep)

    def task_family(self):
        return self.family


def test_downstream_halves_ood_tasks_not_networks():
    config = preset_config("formal_languages", "smoke", num_models=300, chunk_size=300)
    family = task_for(config)
    split, tasks = assign_tasks(family, config)
    zoo = _MetaZoo(family, tasks, split)
    rows = protocol_rows(zoo)
    lang = {r: tuple(tasks[int(zoo.metadata["model"][r])].tolist()) for r in range(len(zoo.metadata["model"]))}
    test_langs = {lang[r] for r in rows["ood"]}
    train_langs = {lang[r] for r in rows["train"]}
    assert test_langs and not test_langs & train_langs  # no OOD test language is seen by the head
    ood_langs = {lang[r] for r in zoo.rows(split="ood")}
    assert len(test_langs) == len(ood_langs) // 2
    assert np.array_equal(protocol_rows(zoo, seed=7)["ood"], rows["ood"])  # published: a fixed seed
    # by network (the option): a test language may have training networks
    by_network = protocol_rows(zoo, seed=0, ood_half="network")
    models_ood = np.unique(zoo.metadata["model"][zoo.rows(split="ood")])
    assert len(np.unique(zoo.metadata["model"][by_network["ood"]])) == len(models_ood) - len(models_ood) // 2
    assert sorted(ood_training_models(zoo, 0, "network").tolist()) == sorted(
        np.random.default_rng(0).permutation(models_ood.astype(np.int64))[: len(models_ood) // 2].tolist())
    with pytest.raises(WspaceError, match="ood_half"):
        DownstreamConfig(ood_half="model")


def test_settings_of_zoos_built_before_the_published_defaults_still_open():
    """Manifests written before split_rule (and the tiled-MNIST options) existed hold only the old
    settings; the families still build from them (the new settings take their defaults)."""
    from wspace_core import plugins

    old_fl = {"num_eval_strings": 1000, "max_n": 10, "sequence_tokens": 42, "ood_max_abs_sum": 1,
              "validation_fraction": 0.1, "split_seed": 0}
    fl = plugins.task_families().get("formal_languages")(**old_fl)
    assert fl.settings()["split_rule"] == "published"
    old_mnist = {"split_seed": 0, "train_fraction": 0.8, "num_eval_images": 1000,
                 "weight_decays": [0.0, 0.001, 0.01, 0.1]}
    mnist = plugins.task_families().get("tiled_mnist")(**old_mnist)
    assert mnist.config.num_eval_images == 1000 and mnist.settings()["interpolation"] == "nearest"


def test_contract_defaults_for_families_with_a_rule_per_task():
    """A family that declares nothing new keeps its per-task split and gets the OOD halving by
    task in lexicographic order with the published seed."""
    from wspace_core.task import TaskFamily

    class PerTask(TaskFamily):
        name = "per_task"
        task_columns = ("k",)
        settings = sample_tasks = training_batch = training_loss = evaluate = rollouts = properties = None

        def split_of(self, tasks):
            return ["ood" if k >= 3 else "train" for k in tasks[:, 0].tolist()]

    family = PerTask()
    tasks = torch.tensor([[0.0], [3.0], [5.0], [4.0], [5.0], [6.0]], dtype=torch.float64)
    assert family.split_scope() == "task"
    assert family.split_zoo(tasks, (0.7, 0.15, 0.15)) == family.split_of(tasks)
    is_ood = np.array([s == "ood" for s in family.split_of(tasks)])
    half = family.ood_training_half(tasks, is_ood)
    ood_tasks = np.array([3.0, 4.0, 5.0, 6.0])  # lexicographic
    to_training = set(ood_tasks[np.random.RandomState(splits.OOD_HALF_SEED).permutation(4)[2:]].tolist())
    assert half.tolist() == [False] + [k in to_training for k in [3.0, 5.0, 4.0, 5.0, 6.0]]
