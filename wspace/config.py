"""Run configuration: one tree of attrs frozen classes (the run, its zoo, encoder, pretraining
and downstream sections), resolved once from a preset, an optional TOML file and flags that win.

Resolution order (later wins): preset (``wspace.presets``) -> TOML file -> command-line flags,
applied in ``resolve``. ``attrs.asdict`` of the result is what MLflow logs and what a run
directory stores (config.json); ``config_from_dict`` rebuilds the same object from it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs

from wspace_core.presets import check_preset
from wspace_core.registry import WspaceError
from wspace.presets import section_presets
from wspace.validation import check_seed_field
from wspace_core.validators import (
    Check, boolean, is_number,
    non_negative_int as _non_negative_int, non_negative_number as _non_negative_float, one_of as _one_of,
    positive_int as _positive_int, positive_number as _positive_float,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


#: device types wspace runs on; ``torch.device`` parses more (meta, xpu, ...), which fail late
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(instance, attribute, value) -> None:
    """An attrs validator: ``value`` is a torch device name wspace can compute on (cpu, cuda,
    cuda:N, mps)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise WspaceError(f"unknown device {value!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type not in DEVICE_TYPES:
        raise WspaceError(f"device {value!r} is not one wspace computes on; use cpu, cuda, cuda:N or mps")


def require_device(value: str) -> None:
    """Refuse a device this machine does not have (before any work is done)."""
    import torch

    check_device(None, None, value)
    device = torch.device(value)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WspaceError(f"--device {value} was asked for but torch sees no GPU on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise WspaceError(f"--device {value}: this machine has {torch.cuda.device_count()} GPU(s); "
                          f"use cuda:0 to cuda:{torch.cuda.device_count() - 1} or --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise WspaceError(f"--device {value} was asked for but torch has no MPS backend here; use --device cpu")


def _preset(instance, attribute, value):
    check_preset(value)


#: how gradient clipping applies: to the encoder and the emulator each on its own (the published
#: code: two ``clip_grad_norm_`` calls), or to their parameters as one vector (wspace's option)
GRAD_CLIP_SCOPES = ("per_module", "joint")
#: rollout steps an emulation loss averages over (``wspace_core.objective.POSITIONS``)
LOSS_POSITIONS = ("all", "masked")
#: where the emulator reads z (``wspace.training.emulation.CONDITIONS``)
EMULATOR_CONDITIONS = ("bos", "every_step")
#: how the pretraining learning rate moves over the steps (``wspace.training.pretrain.learning_rate``)
LR_SCHEDULES = ("constant", "cosine")
#: when a run trains its no-information baseline (``wspace.experiment.baseline``): in a worker
#: process while the encoder trains, or before the encoder
BASELINE_SCHEDULES = ("alongside", "before")


#: ``PretrainConfig.selection_metric``: the trained objective's own metric
TRAINED_OBJECTIVE = "objective"
_metric_name = Check(lambda value: isinstance(value, str) and bool(value),
                     "{name} must be \"objective\" or the name of an emulation metric, got {value!r}")


@attrs.frozen
class PretrainConfig:
    """Emulation pretraining: the emulator imitates each network on its stored rollouts.

    Defaults follow the paper's published code (``training_script.py``) where it makes a choice:
    objective total variation averaged over all rollout positions, 1 rollout per network per
    step, gradient clipping 0.1 on encoder and emulator separately. Budgets (steps, learning
    rate, emulator size, early stopping) are the presets' business (``wspace.presets``)."""

    steps: int = attrs.field(default=1500, validator=_positive_int)
    batch_size: int = attrs.field(default=64, validator=_positive_int)  # networks per step
    rollouts_per_network: int = attrs.field(default=1, validator=_positive_int)  # stored rollouts of each, per step
    eval_rollouts: int = attrs.field(default=16, validator=_positive_int)
    lr: float = attrs.field(default=1e-3, validator=_positive_float)
    #: "constant" (the published code) or "cosine": from ``lr`` down a half cosine to 0 at ``steps``
    lr_schedule: str = attrs.field(default="constant", validator=_one_of(*LR_SCHEDULES))
    #: steps of linear warm-up from 0 to ``lr`` before the schedule (0: none, as published)
    warmup_steps: int = attrs.field(default=0, validator=_non_negative_int)
    weight_decay: float = attrs.field(default=0.01, validator=_non_negative_float)
    grad_clip: float = attrs.field(default=0.1, validator=_positive_float)
    grad_clip_scope: str = attrs.field(default="per_module", validator=_one_of(*GRAD_CLIP_SCOPES))
    eval_every: int = attrs.field(default=100, validator=_positive_int)
    #: evaluations without improvement before stopping; 0: never stop early (the published code)
    patience: int = attrs.field(default=5, validator=_non_negative_int)
    #: the validation metric the best state is chosen on and early stopping counts: "objective",
    #: the trained objective's (the published code: it trains and selects on total variation), or
    #: any metric the objective reports (``wspace list objectives``), e.g.
    #: "published_total_variation" while training cross-entropy
    selection_metric: str = attrs.field(default=TRAINED_OBJECTIVE, validator=_metric_name)
    checkpoint_every: int = attrs.field(default=100, validator=_positive_int)
    objective: str = "total_variation"
    #: "all": the loss averages over every rollout step (published); "masked": the task's mask
    loss_positions: str = attrs.field(default="all", validator=_one_of(*LOSS_POSITIONS))
    emulator_hidden: int = attrs.field(default=128, validator=_positive_int)
    emulator_layers: int = attrs.field(default=2, validator=_positive_int)
    #: where z enters the emulator: "bos", the first input only (published default), or "every_step"
    emulator_condition: str = attrs.field(default="bos", validator=_one_of(*EMULATOR_CONDITIONS))
    #: forget-gate biases of the emulator set to 1 at initialisation (off in the published configs)
    emulator_open_forget_gates: bool = attrs.field(default=False, validator=boolean)



#: how the OOD set is halved between a downstream predictor's training and test data
#: (``wspace.evaluation.downstream``): by task (published) or by network
OOD_HALVES = ("task", "network")


@attrs.frozen
class DownstreamConfig:
    """Property prediction from z: heads on the frozen z, and the supervised baseline (the same
    encoder trained end to end with the head)."""

    head_hidden: int = attrs.field(default=128, validator=_positive_int)
    frozen_steps: int = attrs.field(default=1000, validator=_positive_int)  # full-batch steps of a head on frozen z
    frozen_lr: float = attrs.field(default=1e-3, validator=_positive_float)
    supervised_steps: int = attrs.field(default=600, validator=_positive_int)  # minibatch steps, end to end
    supervised_lr: float = attrs.field(default=1e-3, validator=_positive_float)
    batch_size: int = attrs.field(default=64, validator=_positive_int)
    weight_decay: float = attrs.field(default=0.01, validator=_non_negative_float)
    #: how the OOD set is halved between the predictor's training and test data: "task"
    #: (published) or "network" (see ``wspace.evaluation.downstream``)
    ood_half: str = attrs.field(default="task", validator=_one_of(*OOD_HALVES))


def _table(instance, attribute, value):
    if not isinstance(value, dict):
        raise WspaceError(f"{attribute.name} must be a table of settings, got {value!r}")


def _fraction(value) -> bool:
    return is_number(value) and 0 <= value <= 1


#: ``snapshot_fractions`` / ``lr_fractions`` at their default: the paper's points, scaled
PAPER_SCHEDULE = "paper"


def _fractions_value(value):
    if value == PAPER_SCHEDULE or not isinstance(value, (list, tuple)):
        return value
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


def _snapshot_fractions(instance, attribute, value):
    if value == PAPER_SCHEDULE:
        return
    if (not isinstance(value, tuple) or not value or not all(_fraction(v) for v in value)
            or list(value) != sorted(set(value))):
        raise WspaceError(f"zoo {attribute.name} must be \"paper\" or increasing fractions of training in "
                          f"[0, 1] (e.g. [0, 0.1, 0.25, 0.5, 1]), got {value!r}")


def _lr_fractions(instance, attribute, value):
    if value == PAPER_SCHEDULE:
        return
    ok = isinstance(value, tuple) and value and all(
        isinstance(p, tuple) and len(p) == 2 and _fraction(p[0]) and is_number(p[1]) and p[1] > 0 for p in value)
    if not ok or [p[0] for p in value] != sorted({p[0] for p in value}):
        raise WspaceError(f"zoo {attribute.name} must be \"paper\" or [fraction of training, learning rate] pairs at "
                          f"increasing fractions in [0, 1] with positive rates (e.g. [[0, 0.01], [0.7, 0.01], "
                          f"[1, 0.001]]), got {value!r}")


@attrs.frozen
class ZooSettings:
    """The zoo a run learns from, less what the run names itself (task, architecture, device):
    ``wspace.zoo.build.zoo_config`` makes the ``ZooConfig`` of it. ``steps`` sets the training
    schedule (the paper's, scaled: ``scaled_schedule``; ``snapshot_fractions`` and
    ``lr_fractions`` replace its snapshot and learning-rate points); ``task_settings`` go to the
    task family."""

    num_models: int = attrs.field(validator=_positive_int)
    chunk_size: int = attrs.field(validator=_positive_int)  # networks trained at once and committed together
    steps: int = attrs.field(validator=_positive_int)  # training steps of each network
    num_rollouts: int = attrs.field(validator=_positive_int)  # stored rollouts of each snapshot
    hidden_size: int = attrs.field(default=32, validator=_positive_int)
    num_layers: int = attrs.field(default=2, validator=_positive_int)
    seed: int = attrs.field(default=0, validator=_non_negative_int)
    split_fractions: tuple[float, float, float] = attrs.field(default=(0.7, 0.15, 0.15), converter=tuple)
    data_block: int = attrs.field(default=10, validator=_positive_int)
    task_settings: dict[str, Any] = attrs.field(factory=dict, validator=_table)
    #: snapshots at these fractions of ``steps`` (rounded; points that round onto one step
    #: merge); "paper": the paper's nine, at 0, 0.5, 1, 2.5, 5, 10, 25, 50 and 100 % of training
    snapshot_fractions: tuple[float, ...] | str = attrs.field(default=PAPER_SCHEDULE, converter=_fractions_value,
                                                              validator=_snapshot_fractions)
    #: learning rate (fraction of ``steps``, lr) points, linear between them; "paper": the
    #: paper's, 0.01 at the start, 0.003 at half, 0.0003 at the end
    lr_fractions: tuple[tuple[float, float], ...] | str = attrs.field(default=PAPER_SCHEDULE,
                                                                      converter=_fractions_value,
                                                                      validator=_lr_fractions)


@attrs.frozen
class EncoderSettings:
    """The encoder a run pretrains: the plugin's registered name, the size of z, and the plugin's
    own options. The plugin types and checks ``options`` itself (its attrs config class, e.g.
    ``wspace_probing.config.ProbingConfig``) and sizes the rest from the run's preset;
    ``wspace.validation.check_run`` builds it before any work, so a wrong option fails first."""

    name: str = attrs.field(default="interactive_probing", validator=attrs.validators.instance_of(str))
    z_dim: int = attrs.field(default=16, validator=_positive_int)
    options: dict[str, Any] = attrs.field(factory=dict, validator=_table)


@attrs.frozen
class RunConfig:
    """Everything `wspace run` needs; ``attrs.asdict`` of it is logged as MLflow params. Sections
    left out default to the preset's values (for the task family, on the device)."""

    arch: str = "lstm"
    task: str = "formal_languages"
    encoder: EncoderSettings = attrs.field(factory=EncoderSettings,
                                           validator=attrs.validators.instance_of(EncoderSettings))
    preset: str = attrs.field(default="quick", validator=_preset)
    seed: int = attrs.field(default=0, validator=check_seed_field)
    device: str = attrs.field(default="cpu", validator=check_device)
    #: "alongside" falls back to "before" where a worker would not pay: off the CPU, under
    #: torchrun, or with one torch thread (``wspace.experiment.baseline.runs_alongside``)
    baseline: str = attrs.field(default="alongside", validator=_one_of(*BASELINE_SCHEDULES))
    zoo: ZooSettings = attrs.field(validator=attrs.validators.instance_of(ZooSettings))
    zoo_path: str | None = None  # an existing zoo directory to learn from instead of the preset's
    pretrain: PretrainConfig = attrs.field(validator=attrs.validators.instance_of(PretrainConfig))
    downstream: DownstreamConfig = attrs.field(validator=attrs.validators.instance_of(DownstreamConfig))
    out_dir: str = "wspace_runs"
    tracking_uri: str | None = None
    tracking: bool = True
    experiment: str = "wspace"

    @zoo.default
    def _preset_zoo(self) -> ZooSettings:
        return zoo_settings(self.task, self.preset, self.device)

    @pretrain.default
    def _preset_pretrain(self) -> PretrainConfig:
        return PretrainConfig(**section_presets(self.task, self.preset, self.device)["pretrain"])

    @downstream.default
    def _preset_downstream(self) -> DownstreamConfig:
        return DownstreamConfig(**section_presets(self.task, self.preset, self.device)["downstream"])


#: the sections of a run configuration (tables of a TOML file), by field name
SECTIONS: dict[str, type] = {"zoo": ZooSettings, "encoder": EncoderSettings, "pretrain": PretrainConfig,
                             "downstream": DownstreamConfig}
#: the top-level settings that are plain values, with the type a TOML file must give
_TOP_TYPES = {f.name: (str if f.default is None else type(f.default)) for f in attrs.fields(RunConfig)
              if f.name not in SECTIONS}
_TOP_KEYS = {f.name for f in attrs.fields(RunConfig)}
#: settings that were top-level before the encoder section was typed -> where they live now
MOVED_TO_ENCODER = {"z_dim": "z_dim", "encoder_options": "options"}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in attrs.fields(cls)}


def _check_keys(given: dict, allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise WspaceError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"valid keys: {', '.join(sorted(allowed))}"
        )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a run configuration file, refusing unknown keys and wrong types with the key named.
    Tables: ``[zoo]`` (with ``[zoo.task_settings]``), ``[encoder]`` (with ``[encoder.options]``),
    ``[pretrain]``, ``[downstream]``; everything else is a top-level value. ``encoder = "name"``
    at the top level is short for ``[encoder] name = "name"``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise WspaceError(f"config file {path} does not exist; pass an existing TOML file to --config") from None
    except tomllib.TOMLDecodeError as err:
        raise WspaceError(f"config file {path} is not valid TOML: {err}") from None
    if "task_settings" in data:
        raise WspaceError(f"{path}: task settings are part of the zoo; write them as [zoo.task_settings]")
    for old, new in MOVED_TO_ENCODER.items():
        if old in data:
            where = "[encoder.options]" if new == "options" else f"[encoder] {new} = ..."
            raise WspaceError(f"{path}: {old!r} is an encoder setting; write it as {where}")
    _check_keys(data, _TOP_KEYS, "the top level", str(path))
    if isinstance(data.get("encoder"), str):  # the short form: the encoder's name
        data["encoder"] = {"name": data["encoder"]}
    for table in SECTIONS:
        if table in data and not isinstance(data[table], dict):
            raise WspaceError(f"{path}: {table!r} must be a table ([{table}])")
    for table in ("encoder", "pretrain", "downstream"):
        _check_keys(data.get(table, {}), _field_names(SECTIONS[table]), f"[{table}]", str(path))
    for key, expected in _TOP_TYPES.items():
        value = data.get(key, expected())
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise WspaceError(f"{path}: {key!r} must be of type {expected.__name__}, got {value!r}")
    return data


def _merge(values: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``layer`` on top (None: not given); tables (task settings) merge key by key."""
    merged = dict(values)
    for key, value in layer.items():
        if value is None:
            continue
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both_tables else value
    return merged


def zoo_settings(task: str, preset: str, device: str, *layers: dict[str, Any]) -> ZooSettings:
    """The zoo settings of ``preset`` for ``task`` on ``device`` with each of ``layers`` winning
    over the one before. A preset chunk larger than an overridden ``num_models`` shrinks to it."""
    valid = _field_names(ZooSettings)
    values = section_presets(task, preset, device)["zoo"]
    unknown = sorted(set(values) - valid)
    if unknown:
        raise WspaceError(f"task family {task!r} declares unknown zoo setting(s) {', '.join(unknown)} for "
                          f"preset {preset!r}; valid: {', '.join(sorted(valid))}")
    for layer in layers:
        unknown = sorted(set(layer) - valid)
        if unknown:
            raise WspaceError(f"unknown zoo setting(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(sorted(valid))}")
        values = _merge(values, layer)
    if not any(layer.get("chunk_size") is not None for layer in layers):
        values["chunk_size"] = min(values["chunk_size"], values["num_models"])
    return ZooSettings(**values)


def _split_layer(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A layer of settings -> (top-level values, {section: values}). Sections come as tables
    (``{"pretrain": {...}}``) or dotted keys (``{"pretrain.steps": 7}``); a string ``encoder``
    is the encoder's name."""
    top, sections = {}, {name: {} for name in SECTIONS}
    for key, value in values.items():
        section, _, field = key.partition(".")
        if key == "encoder" and isinstance(value, str):
            sections["encoder"]["name"] = value
        elif field and section in SECTIONS:
            sections[section][field] = value
        elif key in SECTIONS and value is not None:
            sections[key] = _merge(sections[key], value)
        else:
            top[key] = value
    return top, sections


def resolve(file_values: dict | None = None, **flags: Any) -> RunConfig:
    """preset < file < flags. ``file_values`` as ``load_toml`` returns them; ``flags`` uses
    RunConfig field names, section tables (``zoo={...}``) and ``<section>.<field>`` keys (e.g.
    ``{"pretrain.steps": 100}``, ``{"encoder.z_dim": 8}``; ``encoder="dwsnet"`` names the
    encoder); None means "not given". The preset comes from the flags, else
    the file, else "quick"."""
    layers = [_split_layer(dict(file_values or {})), _split_layer(flags)]
    top: dict[str, Any] = {}
    for values, _ in layers:
        top = _merge(top, values)
    preset = top.pop("preset", None) or attrs.fields(RunConfig).preset.default
    check_preset(preset)
    _check_keys(top, _TOP_KEYS - set(SECTIONS) - {"preset"}, "run settings", "configuration")
    task = top.get("task", attrs.fields(RunConfig).task.default)
    device = top.get("device", attrs.fields(RunConfig).device.default)
    presets = section_presets(task, preset, device)
    sections: dict[str, Any] = {"zoo": zoo_settings(task, preset, device, *(s["zoo"] for _, s in layers))}
    for name in ("encoder", "pretrain", "downstream"):
        values = presets.get(name, {})
        for _, layer in layers:
            _check_keys(layer[name], _field_names(SECTIONS[name]), f"{name} settings", "configuration")
            values = _merge(values, layer[name])
        sections[name] = SECTIONS[name](**values)
    return RunConfig(preset=preset, **sections, **top)


# ---- stored configurations (config.json of a run directory, the encoder checkpoint) -------------

#: what a stored configuration without these keys was trained with (wspace before it defaulted to
#: the published code's choices): resuming it keeps its objective and clipping
EARLIER_PRETRAIN_CHOICES = {"loss_positions": "masked", "grad_clip_scope": "joint"}
#: what a stored configuration without a learning-rate schedule trained with, whatever its preset
CONSTANT_LR = {"lr_schedule": "constant", "warmup_steps": 0}
#: ... and the metric its best state was chosen on: its trained objective's
OBJECTIVE_SELECTION = {"selection_metric": TRAINED_OBJECTIVE}


def with_earlier_choices(raw: dict) -> dict:
    """A stored configuration in the layout of today's ``attrs.asdict(RunConfig)``. One written
    before ``loss_positions`` existed gets the pretraining choices it was trained with, not
    today's defaults; one written before the zoo section was typed (its ``zoo`` the overrides of
    the preset, ``task_settings`` beside it) gets them as zoo overrides, which give the same zoo;
    one written before the encoder section was typed (``encoder`` a name, ``z_dim`` and
    ``encoder_options`` beside it) gets them as its encoder section; one written before the zoo's
    schedule fractions existed gets the paper's schedule and its family's earlier settings; one
    written before the learning-rate schedule or the selection metric existed gets the constant
    rate it trained with and its best state chosen on the trained objective."""
    raw = dict(raw)
    if isinstance(raw.get("encoder"), str) or any(old in raw for old in MOVED_TO_ENCODER):
        encoder = raw.pop("encoder", None)
        section = {"name": encoder} if isinstance(encoder, str) else dict(encoder or {})
        for old, new in MOVED_TO_ENCODER.items():
            if old in raw:
                section[new] = raw.pop(old)
        raw["encoder"] = section
    pretrain = raw.get("pretrain")
    for marker, earlier in (("loss_positions", EARLIER_PRETRAIN_CHOICES), ("lr_schedule", CONSTANT_LR),
                            ("selection_metric", OBJECTIVE_SELECTION)):
        if isinstance(pretrain, dict) and marker not in pretrain:
            pretrain = raw["pretrain"] = {**earlier, **pretrain}
    if "task_settings" in raw:
        settings = raw.pop("task_settings")
        zoo = raw.get("zoo", {})
        if settings and isinstance(zoo, dict):
            raw["zoo"] = {**zoo, "task_settings": settings}
    zoo = raw.get("zoo")
    if isinstance(zoo, dict) and "lr_fractions" not in zoo:
        raw["zoo"] = {**zoo, **_zoo_before_schedule_fractions(raw.get("task", "formal_languages"),
                                                             zoo.get("task_settings") or {})}
    return raw


def _zoo_before_schedule_fractions(task: str, task_settings: dict) -> dict:
    """What a zoo section written before ``snapshot_fractions`` and ``lr_fractions`` existed was
    built with: the paper's schedule, and the task family's settings at the values that behave
    as before they existed (``TaskFamily.unrecorded_defaults``), not today's preset values."""
    from wspace_core import plugins

    families = plugins.task_families()
    unrecorded = dict(families.get(task).unrecorded_defaults) if task in families else {}
    return {"snapshot_fractions": PAPER_SCHEDULE, "lr_fractions": PAPER_SCHEDULE,
            "task_settings": {**unrecorded, **task_settings}}


def config_from_dict(raw, source: str) -> RunConfig:
    """A RunConfig from its stored plain data (``attrs.asdict``), checked like a configuration
    file; ``resolve(attrs.asdict(config))`` gives ``config`` back."""
    if not isinstance(raw, dict):
        raise WspaceError(f"{source} does not hold a run configuration; start a new run")
    raw = with_earlier_choices(raw)
    if not all(isinstance(raw.get(name, {}), dict) for name in SECTIONS):
        raise WspaceError(f"{source} does not hold a run configuration; start a new run")
    try:
        return resolve(raw)
    except WspaceError as err:
        raise WspaceError(f"{source}: {err}") from None
    except TypeError as err:
        raise WspaceError(f"{source} holds a configuration this wspace cannot read ({err}); start a new run") from None

