"""The tiled-MNIST task family: tiling, rotation, batches, splits, evaluation, missing data."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace_core.registry import WspaceError
from wspace_tiled_mnist import TiledMnist
from wspace_tiled_mnist import data as mnist_data
from wspace_tiled_mnist import images as im
from wspace_tiled_mnist.splits import BIN_WIDTH, OOD_FROM

ROTATION_TOL = 1e-5  # max |difference| to torchvision's bilinear rotate, on [0, 1] pixels


@pytest.fixture(scope="module")
def family():
    fam = TiledMnist(num_eval_images=60, eval_chunk_size=25)
    try:
        fam.data()
    except WspaceError as exc:
        pytest.skip(f"MNIST not available here: {exc}")
    return fam


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_registered_as_tiled_mnist():
    assert plugins.task_families().get("tiled_mnist") is TiledMnist


def test_tiling_inverts_exactly_and_is_row_major():
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    tiles = im.tile(x)
    assert tiles.shape == (2, 3, 49, 16)
    assert torch.equal(im.untile(tiles), x)
    # tile 1 is rows 0..3, columns 4..7; tile 7 starts the second tile row
    assert torch.equal(tiles[0, 0, 1], x[0, 0, 0:4, 4:8].reshape(16))
    assert torch.equal(tiles[0, 0, 7], x[0, 0, 4:8, 0:4].reshape(16))


@pytest.mark.parametrize("angles", [(0.0, 17.5, 90.0), (137.25, 200.0, 333.3)])
def test_batched_rotation_matches_torchvision(angles):
    images = torch.rand(3, 4, 28, 28, generator=torch.Generator().manual_seed(1))  # (M, B, H, W)
    ours = im.rotate(images, torch.tensor(angles))
    for m, angle in enumerate(angles):
        ref = TF.rotate(images[m][:, None], angle, interpolation=InterpolationMode.BILINEAR)[:, 0]
        assert (ours[m] - ref).abs().max() < ROTATION_TOL
    # the sign matters: the opposite rotation does not agree
    wrong = im.rotate(images[1:2], -torch.tensor(angles[1:2]))
    ref = TF.rotate(images[1][:, None], angles[1], interpolation=InterpolationMode.BILINEAR)[:, 0]
    assert (wrong[0] - ref).abs().max() > 0.1


def test_digit_sequences_is_bos_then_normalised_rotated_tiles(monkeypatch):
    digits = torch.randint(0, 256, (3, 5, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    angles = torch.tensor([10.0, 250.0, 90.0])
    seq = im.digit_sequences(digits, angles)
    assert seq.shape == (3, 5, 50, 16) and seq.dtype == torch.float32
    assert torch.equal(seq[:, :, 0], torch.zeros(3, 5, 16))
    expected = im.normalise(im.rotate(digits.float() / 255, angles))
    assert torch.allclose(im.untile(seq[:, :, 1:]), expected, atol=1e-5)
    for block in (2, 7):  # blocks within a model's digits, and blocks of whole models
        monkeypatch.setattr(im, "CHUNK_IMAGES", block)
        assert torch.equal(im.digit_sequences(digits, angles), seq)


def test_training_batch_shapes_targets_and_bos(family):
    tasks = family.sample_tasks(2, torch.Generator().manual_seed(0))
    inputs, targets = family.training_batch(tasks, 5, gens(0, 1))
    assert inputs.shape == (2, 5, 50, 16) and inputs.dtype == torch.float32
    assert targets.shape == (2, 5, 50) and targets.dtype == torch.long
    assert torch.equal(inputs[:, :, 0], torch.zeros(2, 5, 16))
    assert (targets == targets[:, :, :1]).all() and targets.min() >= 0 and targets.max() < 10
    # the first network reads its digits rotated by its own angle
    idx = family._draw(family._pools_on("cpu").train, 5, gens(0), replace=True)
    data = family.data()
    assert torch.equal(targets[0, :, 0], data.labels[idx[0]])
    assert torch.equal(inputs[0], im.digit_sequences(data.images[idx], tasks[:1, 0])[0])


def test_training_batch_batched_equals_single_calls(family):
    tasks = family.sample_tasks(3, torch.Generator().manual_seed(1))
    x_all, y_all = family.training_batch(tasks, 7, gens(10, 11, 12))
    for m, seed in enumerate((10, 11, 12)):
        x, y = family.training_batch(tasks[m:m + 1], 7, gens(seed))
        assert torch.equal(x[0], x_all[m]) and torch.equal(y[0], y_all[m])
    x_again, _ = family.training_batch(tasks, 7, gens(10, 11, 13))
    assert torch.equal(x_again[:2], x_all[:2]) and not torch.equal(x_again[2], x_all[2])


def test_training_loss_is_mean_cross_entropy_per_model(family):
    outputs = torch.randn(2, 3, 50, 10, generator=torch.Generator().manual_seed(3))
    targets = torch.randint(0, 10, (2, 3, 50), generator=torch.Generator().manual_seed(4))
    loss = family.training_loss(outputs, targets)
    for m in range(2):
        ref = torch.nn.functional.cross_entropy(outputs[m].reshape(-1, 10), targets[m].reshape(-1))
        assert torch.allclose(loss[m], ref)


def test_wspace_split_rule():
    fam = TiledMnist(split_rule="wspace")  # needs no data
    for split in ("train", "validation", "ood"):
        tasks = fam.sample_tasks(3000, torch.Generator().manual_seed(5), split)
        assert tasks.shape == (3000, 2) and tasks.dtype == torch.float64
        assert set(fam.split_of(tasks)) == {split}
        angles, bins = tasks[:, 0], torch.floor(tasks[:, 0] / BIN_WIDTH).long()
        if split == "ood":
            assert (angles >= OOD_FROM).all() and (angles < 360).all()
        elif split == "validation":
            assert (angles < OOD_FROM).all() and (bins % 8 == 7).all()
        else:
            assert (angles >= 0).all() and (angles < OOD_FROM).all() and (bins % 8 != 7).all()
        assert set(tasks[:, 1].tolist()) == {0.0, 0.001, 0.01, 0.1}
    train_bins = set(torch.floor(fam.sample_tasks(5000, torch.Generator().manual_seed(6), "train")[:, 0] / 4).tolist())
    val_bins = set(torch.floor(fam.sample_tasks(5000, torch.Generator().manual_seed(7), "validation")[:, 0] / 4).tolist())
    assert not train_bins & val_bins and len(train_bins) == 69 and len(val_bins) == 9
    edge = torch.tensor([[311.999, 0], [312.0, 0], [28.0, 0], [27.999, 0], [32.0, 0], [359.9, 0]], dtype=torch.float64)
    assert fam.split_of(edge) == ["train", "ood", "validation", "train", "train", "ood"]
    everything = fam.sample_tasks(4000, torch.Generator().manual_seed(8))[:, 0]
    assert everything.min() < 10 and everything.max() > 350
    assert torch.equal(fam.weight_decay(edge, None), torch.zeros(6))
    with pytest.raises(WspaceError, match="unknown split"):
        fam.sample_tasks(2, torch.Generator(), "test")


def test_settings_round_trip_and_unknown_setting():
    fam = TiledMnist(split_seed=3, data_root="/somewhere")
    assert "data_root" not in fam.settings()
    assert TiledMnist(**fam.settings()).settings() == fam.settings()
    with pytest.raises(WspaceError, match="known settings"):
        TiledMnist(num_images=5)
    with pytest.raises(WspaceError, match="num_eval_images"):
        TiledMnist(num_eval_images=20_000)
    kinds = {p.name: (p.kind, p.columns) for p in fam.properties()}
    assert kinds == {"rotation": ("angle", ("angle",)), "accuracy": ("scalar", ("performance",)),
                     "training_step": ("categorical", ("snapshot",)),
                     "generalisation_gap": ("scalar", ("gap",))}


def test_evaluate_random_lstm_is_near_chance(family):
    arch = plugins.architectures().get("lstm")(Sizes(16, 32, 10, 2))
    params = arch.init(3, torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(3, torch.Generator().manual_seed(9))
    metrics = family.evaluate(arch, params, tasks, gens(0, 1, 2))
    assert set(metrics) == set(family.metric_columns)
    assert all(v.shape == (3,) for v in metrics.values())
    assert (metrics["performance"] < 0.35).all()
    for key in ("train_loss", "eval_loss"):
        assert ((metrics[key] - math.log(10)).abs() < 0.2).all()
    assert torch.allclose(metrics["gap"], metrics["eval_loss"] - metrics["train_loss"])
    single = family.evaluate(arch, {k: v[1:2] for k, v in params.items()}, tasks[1:2], gens(1))
    for key in family.metric_columns:
        assert torch.allclose(single[key][0], metrics[key][1], atol=1e-5)


def test_rollouts_are_network_inputs_and_log_probs(family):
    arch = plugins.architectures().get("lstm")(Sizes(16, 8, 10, 1))
    params = arch.init(2, torch.Generator().manual_seed(1))
    tasks = family.sample_tasks(2, torch.Generator().manual_seed(10))
    inputs, outputs = family.rollouts(arch, params, tasks, 30, gens(3, 4))
    assert inputs.shape == (2, 30, 50, 16) and outputs.shape == (2, 30, 50, 10)
    assert torch.allclose(outputs.exp().sum(-1), torch.ones(2, 30, 50), atol=1e-5)
    logits, _ = arch.forward(params, family.network_inputs(inputs))
    assert torch.allclose(torch.log_softmax(logits, -1), outputs, atol=1e-5)


def test_missing_data_root_says_where_and_how(tmp_path, monkeypatch):
    missing = tmp_path / "no_mnist"
    fam = TiledMnist(data_root=str(missing))
    tasks = fam.sample_tasks(1, torch.Generator().manual_seed(0))
    with pytest.raises(WspaceError) as info:
        fam.training_batch(tasks, 2, gens(0))
    message = str(info.value)
    assert str(missing) in message and "data_root" in message and mnist_data.ROOT_ENV in message
    assert "download=True" in message
    monkeypatch.setenv(mnist_data.ROOT_ENV, str(tmp_path / "env_root"))
    with pytest.raises(WspaceError, match="env_root"):
        TiledMnist().data()
