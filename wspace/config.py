"""Run configuration: attrs frozen classes, presets, an optional TOML file, and flags that win.

Resolution order (later wins): preset -> TOML file -> command-line flags.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs

from wspace_core.registry import WspaceError
from wspace.validation import check_seed_field
from wspace_core.validators import (
    non_negative_int as _non_negative_int, non_negative_number as _non_negative_float, one_of as _one_of,
    positive_int as _positive_int, positive_number as _positive_float,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS = ("smoke", "quick", "paper")


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
    if value not in PRESETS:
        raise WspaceError(f"unknown preset {value!r}; presets: {', '.join(PRESETS)}")


def _boolean(instance, attribute, value):
    if not isinstance(value, bool):
        raise WspaceError(f"{attribute.name} must be true or false, got {value!r}")


#: how gradient clipping applies: to the encoder and the emulator each on its own (the published
#: code: two ``clip_grad_norm_`` calls), or to their parameters as one vector (wspace's option)
GRAD_CLIP_SCOPES = ("per_module", "joint")
#: rollout steps an emulation loss averages over (``wspace_core.objective.POSITIONS``)
LOSS_POSITIONS = ("all", "masked")
#: where the emulator reads z (``wspace.training.emulation.CONDITIONS``)
EMULATOR_CONDITIONS = ("bos", "every_step")


@attrs.frozen
class PretrainConfig:
    """Emulation pretraining: the emulator imitates each network on its stored rollouts.

    Defaults follow the paper's published code (``training_script.py``) where it makes a choice:
    objective total variation averaged over all rollout positions, 1 rollout per network per
    step, gradient clipping 0.1 on encoder and emulator separately. Budgets (steps, learning
    rate, emulator size, early stopping) are the presets' business (``PRETRAIN_PRESETS``)."""

    steps: int = attrs.field(default=1500, validator=_positive_int)
    batch_size: int = attrs.field(default=64, validator=_positive_int)  # networks per step
    rollouts_per_network: int = attrs.field(default=1, validator=_positive_int)  # stored rollouts of each, per step
    eval_rollouts: int = attrs.field(default=16, validator=_positive_int)
    lr: float = attrs.field(default=1e-3, validator=_positive_float)
    weight_decay: float = attrs.field(default=0.01, validator=_non_negative_float)
    grad_clip: float = attrs.field(default=0.1, validator=_positive_float)
    grad_clip_scope: str = attrs.field(default="per_module", validator=_one_of(*GRAD_CLIP_SCOPES))
    eval_every: int = attrs.field(default=100, validator=_positive_int)
    #: evaluations without improvement before stopping; 0: never stop early (the published code)
    patience: int = attrs.field(default=5, validator=_non_negative_int)
    checkpoint_every: int = attrs.field(default=100, validator=_positive_int)
    objective: str = "total_variation"
    #: "all": the loss averages over every rollout step (published); "masked": the task's mask
    loss_positions: str = attrs.field(default="all", validator=_one_of(*LOSS_POSITIONS))
    emulator_hidden: int = attrs.field(default=128, validator=_positive_int)
    emulator_layers: int = attrs.field(default=2, validator=_positive_int)
    #: where z enters the emulator: "bos", the first input only (published default), or "every_step"
    emulator_condition: str = attrs.field(default="bos", validator=_one_of(*EMULATOR_CONDITIONS))
    #: forget-gate biases of the emulator set to 1 at initialisation (off in the published configs)
    emulator_open_forget_gates: bool = attrs.field(default=False, validator=_boolean)


PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # smoke and quick are small-budget choices (tests; a 2-core CPU), not the paper's budget
    "smoke": dict(steps=30, batch_size=16, rollouts_per_network=2, eval_rollouts=4, eval_every=15,
                  checkpoint_every=15, emulator_hidden=32, emulator_layers=1),
    # sized for a 2-core CPU: ~0.2 s a step with any encoder (1 torch thread), minutes a run
    "quick": dict(steps=1000, emulator_hidden=96, eval_rollouts=8),
    # the published code's budget (training_script.py, training_configs.py): 100 000 steps of 64
    # networks x 1 rollout, AdamW lr 1e-4, weight decay 0.01, clip 0.1 per module, emulator LSTM
    # 256 x 2, evaluated every 1000 steps, the best validation state kept, no early stopping
    "paper": dict(steps=100_000, lr=1e-4, rollouts_per_network=1, eval_rollouts=100, eval_every=1000,
                  patience=0, checkpoint_every=1000, emulator_hidden=256, emulator_layers=2),
}


@attrs.frozen
class RunConfig:
    """Everything `wspace run` needs; ``attrs.asdict`` of it is logged as MLflow params."""

    arch: str = "lstm"
    task: str = "formal_languages"
    encoder: str = "interactive_probing"
    preset: str = attrs.field(default="quick", validator=_preset)
    seed: int = attrs.field(default=0, validator=check_seed_field)
    z_dim: int = attrs.field(default=16, validator=_positive_int)
    device: str = attrs.field(default="cpu", validator=check_device)
    zoo: dict[str, Any] = attrs.field(factory=dict)  # overrides of the zoo preset (num_models, steps, ...)
    zoo_path: str | None = None  # an existing zoo directory to learn from instead of the preset's
    task_settings: dict[str, Any] = attrs.field(factory=dict)
    encoder_options: dict[str, Any] = attrs.field(factory=dict)
    pretrain: PretrainConfig = attrs.field(factory=PretrainConfig)
    out_dir: str = "wspace_runs"
    tracking_uri: str | None = None
    tracking: bool = True
    experiment: str = "wspace"


_TOP_KEYS = {f.name for f in attrs.fields(RunConfig)}
_PRETRAIN_KEYS = {f.name for f in attrs.fields(PretrainConfig)}


def _check_keys(given: dict, allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise WspaceError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"valid keys: {', '.join(sorted(allowed))}"
        )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a run configuration file, refusing unknown keys and wrong types with the key named."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise WspaceError(f"config file {path} does not exist; pass an existing TOML file to --config") from None
    except tomllib.TOMLDecodeError as err:
        raise WspaceError(f"config file {path} is not valid TOML: {err}") from None
    _check_keys(data, _TOP_KEYS, "the top level", str(path))
    if "pretrain" in data:
        if not isinstance(data["pretrain"], dict):
            raise WspaceError(f"{path}: 'pretrain' must be a table ([pretrain])")
        _check_keys(data["pretrain"], _PRETRAIN_KEYS, "[pretrain]", str(path))
    for table in ("zoo", "task_settings", "encoder_options"):
        if table in data and not isinstance(data[table], dict):
            raise WspaceError(f"{path}: {table!r} must be a table ([{table}])")
    defaults = attrs.asdict(RunConfig(), recurse=False)
    for key, value in data.items():
        if key in ("tracking_uri", "zoo_path"):
            if not isinstance(value, str):
                raise WspaceError(f"{path}: {key!r} must be a string, got {value!r}")
            continue
        if key in ("pretrain", "zoo", "task_settings", "encoder_options"):
            continue
        expected = type(defaults[key])
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise WspaceError(f"{path}: {key!r} must be of type {expected.__name__}, got {value!r}")
    return data


def resolve(file_values: dict | None = None, **flags: Any) -> RunConfig:
    """preset < file < flags. ``flags`` uses RunConfig field names plus ``pretrain.<field>`` keys
    (e.g. ``{"pretrain.steps": 100}``); None means "not given". The preset comes from the flags,
    else the file, else "quick"."""
    file_values = dict(file_values or {})
    flag_preset, file_preset = flags.pop("preset", None), file_values.pop("preset", None)
    preset = flag_preset or file_preset or "quick"
    _preset(None, attrs.fields(RunConfig).preset, preset)
    pretrain = dict(PRETRAIN_PRESETS[preset])
    pretrain.update(file_values.pop("pretrain", {}))
    top = dict(file_values)
    for key, value in flags.items():
        if value is None:
            continue
        if key.startswith("pretrain."):
            pretrain[key.split(".", 1)[1]] = value
        elif key in ("zoo", "task_settings", "encoder_options"):
            top[key] = {**top.get(key, {}), **value}
        else:
            top[key] = value
    _check_keys(pretrain, _PRETRAIN_KEYS, "pretrain settings", "configuration")
    _check_keys(top, _TOP_KEYS - {"pretrain", "preset"}, "run settings", "configuration")
    return RunConfig(preset=preset, pretrain=PretrainConfig(**pretrain), **top)
