"""The tiled-MNIST task family: tiling, rotation, batches, splits, evaluation, missing data."""

import math

import numpy as np
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
    nearest = im.digit_sequences(digits, angles)
    seq = im.digit_sequences(digits, angles, "bilinear")
    assert seq.shape == (3, 5, 50, 16) and seq.dtype == torch.float32
    assert torch.equal(seq[:, :, 0], torch.zeros(3, 5, 16))
    expected = im.normalise(im.rotate(digits.float() / 255, angles))
    assert torch.allclose(im.untile(seq[:, :, 1:]), expected, atol=1e-5)
    for block in (2, 7):  # blocks within a model's digits, and blocks of whole models
        monkeypatch.setattr(im, "CHUNK_IMAGES", block)
        assert torch.equal(im.digit_sequences(digits, angles, "bilinear"), seq)
        assert torch.equal(im.digit_sequences(digits, angles), nearest)


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
    assert kinds == {"rotation": ("scalar", ("angle",)), "rotation_cos_sin": ("angle", ("angle",)),
                     "accuracy": ("scalar", ("performance",)),
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


# ---- the published transform, digits and evaluation ----------------------------------------------

def _published_tiles(pil_digit, angle):
    """The published TiledMNIST item: RandomRotation([a, a]) -> ToTensor -> Normalize on the PIL
    digit, then 4x4 tiles (view / transpose / view) after a zero BOS tile: (50, 16)."""
    from torchvision import transforms

    t = transforms.Compose([transforms.RandomRotation([angle, angle]), transforms.ToTensor(),
                            transforms.Normalize((0.1307,), (0.3081,))])
    image = t(pil_digit)  # (1, 28, 28)
    tiles = image.view(7, 4, 7, 4).transpose(1, 2).contiguous().view(49, 16)
    return torch.cat([torch.zeros(1, 16), tiles])


def test_nearest_tiles_are_the_published_tiles_exactly():
    import PIL.Image

    g = torch.Generator().manual_seed(3)
    digits = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8, generator=g)
    digits[:, :, :4] = 0  # some structure: blank rows, a bright square
    digits[:, :, 10:18, 8:20] = 255
    angles = torch.cat([torch.rand(2, generator=g, dtype=torch.float32).double() * 360,
                        torch.tensor([90.0, 33.3], dtype=torch.float64)])
    seq = im.digit_sequences(digits, angles)
    for m, angle in enumerate(angles.tolist()):
        for b in range(3):
            ref = _published_tiles(PIL.Image.fromarray(digits[m, b].numpy()), angle)
            assert torch.equal(seq[m, b], ref)
    # bilinear (the option) is a different transform
    assert not torch.equal(im.digit_sequences(digits, angles, "bilinear"), seq)


def test_published_digit_split_by_hand():
    from wspace_tiled_mnist.family import HASH_KEYS, published_train_digits

    trains = published_train_digits()
    assert int(trains.sum()) == 47_998 and int((~trains).sum()) == 12_002
    key = HASH_KEYS[0] ^ HASH_KEYS[1]
    for i in (0, 1, 2, 3, 59_999):
        assert trains[i] == ((i ^ key) % 10 < 8)
    assert TiledMnist().config.num_train_images == 47_998
    assert TiledMnist(digit_split="seeded").config.num_train_images == 48_000


def test_rollouts_are_training_digits_by_default(family):
    arch = plugins.architectures().get("lstm")(Sizes(16, 4, 10, 1))
    params = arch.init(1, torch.Generator().manual_seed(2))
    tasks = family.sample_tasks(1, torch.Generator().manual_seed(11))
    inputs, _ = family.rollouts(arch, params, tasks, 6, gens(5))
    pools = family._pools_on("cpu")
    train_idx = family._draw(pools.train, 6, gens(5), replace=False)
    assert torch.equal(inputs, family.sequences(train_idx, tasks[:, 0])[0])
    held_out = TiledMnist(num_eval_images=60, rollout_digits="held_out")
    inputs, _ = held_out.rollouts(arch, params, tasks, 6, gens(5))
    eval_idx = held_out._draw(held_out._pools_on("cpu").eval, 6, gens(5), replace=False)
    assert torch.equal(inputs, held_out.sequences(eval_idx, tasks[:, 0])[0])


def test_published_evaluation_uses_every_held_out_digit():
    fam = TiledMnist()  # num_eval_images=None: the published evaluation
    try:
        data = fam.data()
    except WspaceError as exc:
        pytest.skip(f"MNIST not available here: {exc}")
    arch = plugins.architectures().get("lstm")(Sizes(16, 4, 10, 1))
    params = arch.init(1, torch.Generator().manual_seed(4))
    tasks = torch.tensor([[200.0, 0.0]], dtype=torch.float64)
    metrics = fam.evaluate(arch, params, tasks, gens(7))
    from wspace_tiled_mnist.family import published_train_digits

    held_out = torch.from_numpy(~published_train_digits())
    idx = held_out.nonzero().squeeze(1)[None]  # (1, 12002) every held-out digit, in index order
    inputs, labels = fam.sequences(idx, tasks[:, 0])
    logits, _ = arch.forward(params, inputs)
    accuracy = (logits[:, :, -1].argmax(-1) == labels).double().mean()
    assert abs(metrics["performance"].item() - accuracy.item()) < 1e-6  # order does not matter
    # the loss is the mean of the means of batches of 1000 (the last holds 2) in the drawn order
    g = gens(7)[0]
    order = fam._pools_on("cpu").eval[torch.randperm(12_002, generator=g)]
    ce = torch.nn.functional.cross_entropy(logits[0].permute(0, 2, 1), labels[0][:, None].expand(-1, 50),
                                           reduction="none").double().mean(1)  # (12002,) in index order
    position = torch.empty(60_000, dtype=torch.long)
    position[idx[0]] = torch.arange(12_002)
    batches = ce[position[order]].split(1000)
    assert len(batches) == 13 and len(batches[-1]) == 2
    expected = torch.stack([b.mean() for b in batches]).mean()
    assert abs(metrics["eval_loss"].item() - expected.item()) < 1e-5
    assert torch.allclose(metrics["gap"], metrics["eval_loss"] - metrics["train_loss"])
