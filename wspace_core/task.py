"""The task-family contract: a set of related tasks, how K networks train on them at once,
how they are scored, the rollouts an emulator learns from, and what can be predicted about them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Mapping, Sequence

import attrs
import numpy as np
import torch

from wspace_core.architecture import Architecture, Params
from wspace_core.published import LoadFiles, PublishedZoo
from wspace_core.registry import WspaceError

SPLITS = ("train", "validation", "ood")


@attrs.frozen
class PropertySpec:
    """A property of a network snapshot that a downstream head can predict.

    kind: "multihot" (``groups`` one-hot blocks, e.g. three one-hots of 6), "categorical"
    (``num_classes`` classes), "scalar", or "angle" (degrees, wraps at 360).
    ``column`` names the metadata column(s) it is read from.
    ``class_offset`` (multihot, categorical): a column value v is class ``v + class_offset``
    (e.g. 3 for task offsets in {-3, ..., 2}).
    ``values`` (multihot, categorical; more general, wins over ``class_offset`` when given): the
    possible column values in class order, shared by every group, e.g. ``(-3, -2, -1, 0, 1, 2)``
    makes value -3 class 0. Empty: classes come from ``class_offset``.
    """

    name: str
    kind: Literal["multihot", "categorical", "scalar", "angle"]
    columns: tuple[str, ...] = attrs.field(converter=tuple)
    num_classes: int = 1
    groups: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    class_offset: int = 0
    values: tuple[float, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class TrainingSchedule:
    """How the networks of a zoo are trained (AdamW, piecewise-linear learning rate)."""

    steps: int
    snapshot_steps: tuple[int, ...] = attrs.field(converter=tuple)
    batch_size: int = 32
    lr_points: tuple[tuple[int, float], ...] = attrs.field(
        default=((0, 0.01), (10_000, 0.003), (20_000, 0.0003)), converter=lambda v: tuple(map(tuple, v))
    )
    weight_decay: float = 1e-4

    def lr_at(self, step: int) -> float:
        pts = self.lr_points
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
            if step <= s1:
                return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return pts[-1][1]


class TaskFamily(ABC):
    """A family of related tasks. Subclasses are registered as factories: ``cls(**settings)``.

    Shapes: M models, B sequences per model, T time steps, I inputs, O outputs, N rollouts.

    Randomness: every per-model method takes ``generators``, one ``torch.Generator`` per model,
    and draws model m's randomness from ``generators[m]`` alone, so that M models computed in one
    batch give exactly what M single-model calls with the same generators give.
    """

    name: ClassVar[str] = ""
    input_kind: ClassVar[Literal["onehot", "continuous"]] = "onehot"
    output_kind: ClassVar[Literal["categorical", "continuous"]] = "categorical"
    #: column names of the per-model task parameters (``sample_tasks`` columns, in order)
    task_columns: ClassVar[tuple[str, ...]] = ()
    #: names of the per-snapshot metrics ``evaluate`` returns (the first one is "performance")
    metric_columns: ClassVar[tuple[str, ...]] = ("performance",)
    #: the property (a ``properties`` name) that identifies each network's task: what "task
    #: prediction" predicts; None when no property does
    task_property: ClassVar[str | None] = None
    #: which of the paper's zoos this family reproduces (its claims and figures about that zoo
    #: apply); None for a family of its own
    paper_zoo: ClassVar[str | None] = None
    #: what this family's zoo differs in at each preset (``wspace_core.presets.PRESETS``) from the
    #: application's sizes for that preset: zoo settings (e.g. ``num_models``) and ``task_settings``
    #: (e.g. a smaller evaluation set at the small presets). A preset left out: no differences.
    zoo_presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: settings added after zoos were built without them, at the value that behaves as before:
    #: at that value a setting is left out of ``settings()`` and of a zoo's configuration, so
    #: those zoos keep their fingerprints (a value given explicitly is the same zoo as none)
    unrecorded_defaults: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def recorded_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` less those at their ``unrecorded_defaults`` value: what a zoo records."""
        return {key: value for key, value in settings.items()
                if key not in cls.unrecorded_defaults or cls.unrecorded_defaults[key] != value}

    input_size: int
    output_size: int
    sequence_length: int  # T, including the BOS step

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The family's settings as plain data (stored in zoo manifests, part of the fingerprint)."""

    @abstractmethod
    def sample_tasks(self, num_models: int, generator: torch.Generator,
                     split: str | None = None) -> torch.Tensor:
        """(M, len(task_columns)) float64 task parameters, one row per model, drawn from the
        tasks of ``split`` (None: from all tasks) with ``generator``: uniformly unless the
        family's settings choose another draw (each marginal draw stays uniform)."""

    @abstractmethod
    def split_of(self, tasks: torch.Tensor) -> list[str]:
        """The split ("train", "validation" or "ood") of each task row; tasks never cross splits.
        Under a zoo-scope split rule (``split_scope() == "zoo"``) this is the split a task gets in
        a zoo holding every task (families may refuse where that is undefined)."""

    def split_scope(self) -> Literal["task", "zoo"]:
        """How the family's split rule is applied when a zoo is built.

        "task" (default): ``split_of`` decides each task alone; the builder sizes the splits by
        network (``ZooConfig.split_fractions``) and draws each split's tasks inside it
        (``sample_tasks(split=...)``). "zoo": a task's split depends on the zoo's whole set of
        tasks (the published protocol ranks the zoo's unique tasks); the builder draws every
        network's task from all tasks and then asks ``split_zoo``."""
        return "task"

    def split_zoo(self, tasks: torch.Tensor, fractions: Sequence[float]) -> list[str]:
        """The split of every network of a zoo, given all of its tasks: ``tasks`` (M, K), one row
        per network; ``fractions`` (train, validation, ood). Networks with equal tasks share a
        split. Default: ``split_of`` on each row (a rule per task)."""
        return self.split_of(tasks)

    def ood_training_half(self, tasks: torch.Tensor, is_ood: Sequence[bool]) -> np.ndarray:
        """(M,) bool: which OOD networks go into a downstream predictor's training data, halving
        the OOD set by *task* as published (no OOD test task is seen in training). ``tasks`` (M, K):
        every network of the zoo, ``is_ood`` (M,) marks the OOD ones. Default: the OOD tasks in
        lexicographic order, permuted with the published seed (``wspace_core.splits``); families
        with a published ranking override it."""
        from wspace_core import splits

        return splits.ood_training_half(tasks.numpy(), splits.lexicographic, is_ood)

    def weight_decay(self, tasks: torch.Tensor, schedule: TrainingSchedule) -> torch.Tensor:
        """(M,) AdamW weight decay of each model; default: the schedule's, for all."""
        return torch.full((tasks.shape[0],), schedule.weight_decay, dtype=torch.float32)

    @abstractmethod
    def training_batch(self, tasks: torch.Tensor, batch_size: int,
                       generators: Sequence[torch.Generator],
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """A batch for every model, each from its own task:
        inputs (M, B, T, I) float, targets (M, B, T) long (categorical) or (M, B, T, O) float."""

    @abstractmethod
    def training_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """outputs (M, B, T, O) -> (M,) mean loss of each model (sum it to train all at once)."""

    def rollout_mask(self, rollout_inputs: torch.Tensor) -> torch.Tensor | None:
        """(M, N, T) bool: the rollout steps an emulator is scored on (None: all). Formal languages
        stop counting after the first EOS, for example."""
        return None

    @abstractmethod
    def evaluate(self, arch: Architecture, params: Params, tasks: torch.Tensor,
                 generators: Sequence[torch.Generator]) -> dict[str, torch.Tensor]:
        """{metric: (M,)} for every name in ``metric_columns``."""

    @abstractmethod
    def rollouts(self, arch: Architecture, params: Params, tasks: torch.Tensor, num_rollouts: int,
                 generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored behaviour of each network: (inputs, outputs).
        inputs: (M, N, T) int tokens (one-hot families) or (M, N, T, I) float;
        outputs: (M, N, T, O) log-probabilities (categorical) or values (continuous)."""

    def network_inputs(self, rollout_inputs: torch.Tensor) -> torch.Tensor:
        """Stored rollout inputs -> (..., T, I) float network inputs (one-hot tokens by default)."""
        if self.input_kind == "onehot":
            return torch.nn.functional.one_hot(rollout_inputs.long(), self.input_size).float()
        return rollout_inputs.float()

    @abstractmethod
    def properties(self) -> tuple[PropertySpec, ...]:
        """What a downstream head can predict about a snapshot, read from zoo metadata columns."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings(), "input_size": self.input_size,
                "output_size": self.output_size, "sequence_length": self.sequence_length,
                "input_kind": self.input_kind, "output_kind": self.output_kind,
                "task_columns": list(self.task_columns), "metric_columns": list(self.metric_columns)}

    # ---- published zoos (``wspace zoo import-paper``) -------------------------------------------

    #: the files that tell a published zoo of this family apart from other families' (the import
    #: reads the family from them when none is given); empty: the family has no published zoos
    published_markers: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read_published(cls, load: LoadFiles) -> PublishedZoo:
        """Read a published zoo of this family: ``load(names)`` memory-maps the named files of
        its folder (checked; missing files and files that disagree on the row count are
        refused). Families with ``published_markers`` implement it."""
        raise WspaceError(f"task family {cls.name!r} reads no published zoo")
