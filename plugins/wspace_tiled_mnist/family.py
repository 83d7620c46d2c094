"""The tiled-MNIST task family: each network reads rotated MNIST digits as a sequence of 4×4
tiles and predicts the digit after every tile; its task is its rotation angle (plus its weight decay).

Defaults follow the published code (dataset_creation_sequential_mnist.py); each has wspace's
earlier choice as a named option:
- ``split_rule``: "published" (the zoo's largest 15 % of angles OOD, see ``splits``) | "wspace";
- ``digit_split``: "published" (digit i of the 60 000 MNIST training digits trains networks when
  ``(i XOR k1 XOR k2) mod 10 < 8`` with the published hash keys: 47 998 training digits, 12 002
  held out) | "seeded" (a random ``train_fraction`` by ``split_seed``);
- ``interpolation``: "nearest" (the published ``RandomRotation([a, a])``: its default
  interpolation) | "bilinear";
- ``rollout_digits``: "train" (the published zoo stores 100 *training* digits per snapshot) |
  "held_out";
- evaluation: ``num_eval_images=None`` (published): accuracy and eval loss over every held-out
  digit, train loss over 13 000 random training digits, each loss the mean of the means of
  batches of 1 000 (13 batches at most, as published) | an integer K: K digits from each pool.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from wspace_core.architecture import Architecture, Params
from wspace_core.published import LoadFiles, PublishedZoo
from wspace_core.registry import WspaceError
from wspace_core.task import PropertySpec, TaskFamily, TrainingSchedule
from wspace_core.validators import int_at_least, number_in, one_of
from wspace_tiled_mnist import published
from wspace_tiled_mnist import images as im
from wspace_tiled_mnist.data import MnistTrain, load_train
from wspace_tiled_mnist.splits import (
    draw_published_angles, published_ood_training_half, published_splits, sample_angles, split_of_angles,
)

NUM_CLASSES = 10
SPLIT_RULES = ("published", "wspace")
DIGIT_SPLITS = ("published", "seeded")
ROLLOUT_DIGITS = ("train", "held_out")
#: the published evaluation: batches of 1000 digits, at most 13 of them (max_num_iterations=12)
EVAL_BATCH = 1000
EVAL_BATCHES = 13
#: the published split of the MNIST training digits: (i XOR k1 XOR k2) mod 10 < 8 trains
HASH_KEYS = (0x58A849AF6CBF585A, 0x5CA118CB4D828A5E)
TRAIN_BELOW = 8
MNIST_TRAIN_SIZE = 60_000
#: attrs metadata marking settings that say where/how to compute, not what the tasks are
_LOCAL = {"fingerprint": False}


_positive_int = int_at_least(1, "tiled_mnist setting {name} must be a positive integer, got {value!r}")
_fraction = number_in(0, 1, "tiled_mnist setting {name} must lie strictly between 0 and 1, got {value!r}")
_ONE_OF = "tiled_mnist setting {name} must be one of {choices}, got {value!r}"


def _decays(instance, attribute, value):
    if not value or any(v < 0 for v in value):
        raise WspaceError(f"tiled_mnist setting {attribute.name} must be non-empty and non-negative, got {value!r}")


@attrs.frozen
class TiledMnistConfig:
    """Settings of the family.

    data_root: folder holding ``MNIST/raw/`` (None: $WSPACE_MNIST_ROOT, else ../shared/data/mnist
    relative to the current directory, then to the repository).
    split_rule: "published" | "wspace" (see the module docstring and ``splits``).
    digit_split: which of the 60 000 training digits train networks ("published" hash rule, or
    "seeded": ``split_seed`` fixes a random ``train_fraction``); the rest are held out.
    interpolation: "nearest" (published) | "bilinear".
    rollout_digits: the digits of the stored rollouts, "train" (published) | "held_out".
    num_eval_images: None (published evaluation) or K digits per model and pool in ``evaluate``.
    eval_chunk_size: digits per model evaluated at once (bounds memory, not results).
    weight_decays: the values a model's AdamW weight decay is drawn from, uniformly.
    """

    data_root: str | None = attrs.field(default=None, metadata=_LOCAL,
                                        converter=attrs.converters.optional(str))
    split_rule: str = attrs.field(default="published", validator=one_of(*SPLIT_RULES, message=_ONE_OF))
    digit_split: str = attrs.field(default="published", validator=one_of(*DIGIT_SPLITS, message=_ONE_OF))
    interpolation: str = attrs.field(default="nearest", validator=one_of(*im.INTERPOLATIONS, message=_ONE_OF))
    rollout_digits: str = attrs.field(default="train", validator=one_of(*ROLLOUT_DIGITS, message=_ONE_OF))
    split_seed: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    train_fraction: float = attrs.field(default=0.8, converter=float, validator=_fraction)
    num_eval_images: int | None = attrs.field(default=None, validator=attrs.validators.optional(_positive_int))
    eval_chunk_size: int = attrs.field(default=250, validator=_positive_int, metadata=_LOCAL)
    weight_decays: tuple[float, ...] = attrs.field(
        default=(0.0, 0.001, 0.01, 0.1), converter=lambda v: tuple(float(x) for x in v), validator=_decays)

    @property
    def num_train_images(self) -> int:
        if self.digit_split == "published":
            return int(published_train_digits().sum())
        return round(MNIST_TRAIN_SIZE * self.train_fraction)

    def __attrs_post_init__(self):
        pools = (self.num_train_images, MNIST_TRAIN_SIZE - self.num_train_images)
        if self.num_eval_images is not None and self.num_eval_images > min(pools):
            raise WspaceError(f"tiled_mnist num_eval_images={self.num_eval_images} exceeds the "
                              f"{min(pools)} digits of the smaller image pool; lower it or change train_fraction")


def published_train_digits() -> np.ndarray:
    """(60000,) bool: the MNIST training digits that train the published networks (the rest,
    12 002 of them, are held out for evaluation)."""
    index = np.arange(MNIST_TRAIN_SIZE, dtype=np.int64)
    return (index ^ HASH_KEYS[0] ^ HASH_KEYS[1]) % 10 < TRAIN_BELOW


@attrs.frozen(eq=False)
class _Pools:
    """The data, split into the digits that train networks and those that evaluate them."""

    images: torch.Tensor  # (60000, 28, 28) uint8, on the working device
    labels: torch.Tensor  # (60000,) int64
    train: torch.Tensor  # (n_train,) indices into images
    eval: torch.Tensor  # (n_eval,)


class TiledMnist(TaskFamily):
    """Rotated MNIST read as 49 tiles of 4×4 pixels after a BOS step of literal zeros (zero after
    normalisation); 10 logits at every step.

    Task columns: angle (degrees, counter-clockwise) and weight_decay. Training loss:
    cross-entropy at all 50 steps; performance: final-step accuracy on held-out digits. Data is
    read lazily, on the first call that needs it.
    """

    name = "tiled_mnist"
    input_kind = "continuous"
    output_kind = "categorical"
    task_columns = ("angle", "weight_decay")
    metric_columns = ("performance", "train_loss", "eval_loss", "gap")
    task_property = "rotation"
    paper_zoo = "tiled_mnist"
    #: evaluation digits per snapshot at the small presets (paper: the published evaluation), and
    #: half the quick zoo (a tiled-MNIST network costs more). Measured at quick on 2 cores, snapshots
    #: at 0, 10 %, 25 %, 50 %, 100 % of training: accuracy 0.10 -> 0.38 -> 0.66 -> 0.83 -> 0.89
    zoo_presets = {"smoke": {"task_settings": {"num_eval_images": 32}},
                   "quick": {"num_models": 64, "chunk_size": 64, "task_settings": {"num_eval_images": 200}}}

    input_size = im.TILE_SIZE  # 16
    output_size = NUM_CLASSES  # 10
    sequence_length = 1 + im.NUM_TILES  # 50

    def __init__(self, **settings: Any):
        known = {f.name for f in attrs.fields(TiledMnistConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise WspaceError(f"unknown tiled_mnist setting(s) {', '.join(unknown)}; "
                              f"known settings: {', '.join(sorted(known))}")
        self.config = TiledMnistConfig(**settings)
        self._pools: dict[str, _Pools] = {}  # device -> pools

    # ---- settings, tasks, splits -------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Everything that defines the tasks; data_root and eval_chunk_size (where the data lives,
        how much is evaluated at once) are left out so a zoo moves between machines."""
        out = attrs.asdict(self.config, filter=lambda a, v: a.metadata.get("fingerprint", True))
        out["weight_decays"] = list(out["weight_decays"])  # plain JSON data
        return out

    def sample_tasks(self, num_models: int, generator: torch.Generator,
                     split: str | None = None) -> torch.Tensor:
        if self.config.split_rule == "published":
            if split is not None:
                raise WspaceError(f"tiled_mnist with split_rule=published has no fixed {split!r} angles: a zoo's "
                                  f"splits are decided over all its angles (split_zoo); draw with split=None, or "
                                  f"use split_rule=wspace for fixed angle ranges")
            angles = draw_published_angles(num_models, generator)
        else:
            angles = sample_angles(num_models, generator, split)
        decays = torch.tensor(self.config.weight_decays, dtype=torch.float64)
        which = torch.randint(len(decays), (num_models,), generator=generator)
        return torch.stack([angles, decays[which]], dim=1)  # (M, 2)

    def split_of(self, tasks: torch.Tensor) -> list[str]:
        if self.config.split_rule == "published":
            raise WspaceError("tiled_mnist with split_rule=published splits a zoo over all its angles, not "
                              "one angle at a time: use split_zoo (or split_rule=wspace)")
        return split_of_angles(tasks[:, 0])

    def split_scope(self) -> str:
        return "zoo" if self.config.split_rule == "published" else "task"

    def split_zoo(self, tasks: torch.Tensor, fractions=(0.7, 0.15, 0.15)) -> list[str]:
        """Published rule: the zoo's unique angles ranked by angle (the largest are OOD); the
        weight decay is not part of the task, as published. wspace rule: ``split_of``."""
        if self.config.split_rule == "published":
            angles = tasks[:, 0]
            if ((angles < 0) | (angles >= 360) | angles.isnan()).any():
                raise WspaceError("tiled_mnist angles must lie in [0, 360) degrees")
            return published_splits(angles.numpy(), fractions)
        return self.split_of(tasks)

    def ood_training_half(self, tasks: torch.Tensor, is_ood) -> np.ndarray:
        """The published halving: the zoo's OOD angles in increasing order, permuted (seed 2)."""
        return published_ood_training_half(tasks[:, 0].numpy(), is_ood)

    def weight_decay(self, tasks: torch.Tensor, schedule: TrainingSchedule) -> torch.Tensor:
        """(M,) each model's own weight decay (task column), not the schedule's."""
        return tasks[:, 1].to(torch.float32)

    def properties(self) -> tuple[PropertySpec, ...]:
        return (
            PropertySpec("rotation", "scalar", ("angle",)),  # published: MSE on the angle
            PropertySpec("rotation_cos_sin", "angle", ("angle",)),  # wspace's option: (cos, sin)
            PropertySpec("accuracy", "scalar", ("performance",)),
            PropertySpec("training_step", "categorical", ("snapshot",), num_classes=9),
            PropertySpec("generalisation_gap", "scalar", ("gap",)),
        )

    # ---- data ----------------------------------------------------------------------------------

    def data(self) -> MnistTrain:
        """The MNIST training set (loaded once per process; WspaceError if it cannot be found)."""
        return load_train(self.config.data_root)

    def _pools_on(self, device: torch.device | str) -> _Pools:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one copy
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        pools = self._pools.get(key)
        if pools is None:
            data = self.data()
            if self.config.digit_split == "published":
                trains = torch.from_numpy(published_train_digits())
                train, held_out = trains.nonzero().squeeze(1), (~trains).nonzero().squeeze(1)
            else:
                order = torch.randperm(MNIST_TRAIN_SIZE,
                                       generator=torch.Generator().manual_seed(self.config.split_seed))
                n = self.config.num_train_images
                train, held_out = order[:n], order[n:]
            pools = _Pools(data.images.to(device), data.labels.to(device), train.to(device), held_out.to(device))
            self._pools[key] = pools
        return pools

    @staticmethod
    def _draw(pool: torch.Tensor, count: int, generators: Sequence[torch.Generator],
              replace: bool) -> torch.Tensor:
        """(M, count) indices into the images, model m's drawn from ``generators[m]`` alone."""
        rows = []
        for g in generators:  # only the random draws are per model; everything after is batched
            if replace or count > len(pool):
                pick = torch.randint(len(pool), (count,), generator=g, device=g.device)
            else:
                pick = torch.randperm(len(pool), generator=g, device=g.device)[:count]
            rows.append(pick)
        return pool[torch.stack(rows).to(pool.device)]

    def _check(self, tasks: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        if tasks.ndim != 2 or tasks.shape[1] != len(self.task_columns):
            raise WspaceError(f"tiled_mnist tasks must have shape (models, 2) [angle, weight_decay], "
                              f"got {tuple(tasks.shape)}")
        if len(generators) != tasks.shape[0]:
            raise WspaceError(f"one generator per model is needed: {tasks.shape[0]} tasks, "
                              f"{len(generators)} generators")
        return tasks[:, 0]

    def sequences(self, indices: torch.Tensor, angles: torch.Tensor,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Digits ``indices`` (M, B) of the training set, model m's rotated by ``angles[m]`` ->
        inputs (M, B, 50, 16) float, labels (M, B) long."""
        pools = self._pools_on(device)
        indices = indices.to(pools.images.device)
        inputs = im.digit_sequences(pools.images[indices], angles.to(pools.images.device), self.config.interpolation)
        return inputs, pools.labels[indices]

    # ---- training ------------------------------------------------------------------------------

    def training_batch(self, tasks, batch_size, generators, device="cpu"):
        angles = self._check(tasks, generators)
        pools = self._pools_on(device)
        indices = self._draw(pools.train, batch_size, generators, replace=True)  # (M, B)
        inputs, labels = self.sequences(indices, angles, device)
        targets = labels[:, :, None].expand(-1, -1, self.sequence_length).contiguous()  # (M, B, T)
        return inputs, targets

    def training_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all sequences and steps of each model: (M, B, T, 10) -> (M,)."""
        ce = F.cross_entropy(rearrange(outputs, "m b t o -> (m b t) o"), targets.reshape(-1), reduction="none")
        return rearrange(ce, "(m r) -> m r", m=outputs.shape[0]).mean(1)

    # ---- evaluation and rollouts ---------------------------------------------------------------

    @torch.no_grad()
    def _score(self, arch: Architecture, params: Params, angles: torch.Tensor,
               indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per digit, of each model on digits (M, K): mean CE over all steps (M, K) float64 and
        whether the final step is right (M, K) bool."""
        ref = next(iter(params.values()))
        losses, right = [], []
        for chunk in indices.split(self.config.eval_chunk_size, dim=1):  # (M, C)
            inputs, labels = self.sequences(chunk, angles, ref.device)
            logits, _ = arch.forward(params, inputs.to(ref.dtype))  # (M, C, T, 10)
            targets = labels[:, :, None].expand(-1, -1, self.sequence_length)
            ce = F.cross_entropy(rearrange(logits, "m c t o -> m o c t"), targets, reduction="none")
            losses.append(ce.double().mean(2))  # (M, C)
            right.append(logits[:, :, -1].argmax(-1) == labels)
        return torch.cat(losses, 1), torch.cat(right, 1)

    def _eval_digits(self, pool: torch.Tensor) -> tuple[int, int]:
        """(digits drawn from ``pool`` per model, batch size the loss is averaged over)."""
        if self.config.num_eval_images is None:  # published: at most 13 batches of 1000
            return min(len(pool), EVAL_BATCH * EVAL_BATCHES), EVAL_BATCH
        return self.config.num_eval_images, self.config.num_eval_images

    @staticmethod
    def _mean_of_batch_means(per_digit: torch.Tensor, batch: int) -> torch.Tensor:
        """(M, K) -> (M,) the mean of the means of consecutive batches of ``batch`` digits (the
        last may be smaller), as the published evaluation averages its DataLoader batches."""
        return torch.stack([part.mean(1) for part in per_digit.split(batch, dim=1)], dim=1).mean(1)

    def evaluate(self, arch, params, tasks, generators):
        """performance: final-step accuracy on the held-out digits drawn; eval_loss / train_loss:
        CE over all steps on those / on training digits, the mean of batch means; gap = eval - train.
        Published (num_eval_images=None): every held-out digit (12 002) and 13 000 training
        digits, each in a random order, batches of 1000."""
        angles = self._check(tasks, generators)
        device = next(iter(params.values())).device
        pools = self._pools_on(device)
        num_eval, batch_eval = self._eval_digits(pools.eval)
        num_train, batch_train = self._eval_digits(pools.train)
        eval_idx = self._draw(pools.eval, num_eval, generators, replace=False)  # (M, K)
        train_idx = self._draw(pools.train, num_train, generators, replace=False)  # (M, K')
        eval_ce, right = self._score(arch, params, angles, eval_idx)
        train_ce, _ = self._score(arch, params, angles, train_idx)
        eval_loss = self._mean_of_batch_means(eval_ce, batch_eval).float()
        train_loss = self._mean_of_batch_means(train_ce, batch_train).float()
        return {"performance": right.double().mean(1).float(), "train_loss": train_loss,
                "eval_loss": eval_loss, "gap": eval_loss - train_loss}

    @torch.no_grad()
    def rollouts(self, arch, params, tasks, num_rollouts, generators):
        """N digits per model, training digits (published) or held-out ones (``rollout_digits``):
        inputs (M, N, 50, 16) exactly as the network read them, outputs (M, N, 50, 10) its
        log-softmax."""
        angles = self._check(tasks, generators)
        ref = next(iter(params.values()))
        pools = self._pools_on(ref.device)
        pool = pools.train if self.config.rollout_digits == "train" else pools.eval
        indices = self._draw(pool, num_rollouts, generators, replace=False)  # (M, N)
        inputs, outputs = [], []
        for chunk in indices.split(self.config.eval_chunk_size, dim=1):
            x, _ = self.sequences(chunk, angles, ref.device)
            x = x.to(ref.dtype)
            logits, _ = arch.forward(params, x)
            inputs.append(x)
            outputs.append(torch.log_softmax(logits, dim=-1))
        return torch.cat(inputs, dim=1), torch.cat(outputs, dim=1)

    #: the paper's published zoos (``wspace zoo import-paper``)
    published_markers = published.MARKERS

    @classmethod
    def read_published(cls, load: LoadFiles) -> PublishedZoo:
        """The paper's published zoo (``wspace_tiled_mnist.published``)."""
        return published.read_published(cls, load)
