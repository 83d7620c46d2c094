"""Encoder configs: one attrs frozen class per encoder, built from a named preset and then
overridden field by field from ``EncoderContext.options``."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import attrs

from wspace_core.presets import PRESETS
from wspace_core.registry import WspaceError

C = TypeVar("C", bound="PresetConfig")


def positive_int(value: Any) -> int:
    """Converter for integer sizes given as plain data (an int, or a string such as "256")."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        raise WspaceError(f"expected a positive integer, got {value!r}")
    if number < 1:
        raise WspaceError(f"expected a positive integer, got {value!r}")
    return number


def non_negative_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WspaceError(f"expected a non-negative number, got {value!r}") from None
    if number < 0:
        raise WspaceError(f"expected a non-negative number, got {value!r}")
    return number


def boolean(value: Any) -> bool:
    """Converter for flags given as plain data: a bool, or "true"/"false"/"1"/"0"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise WspaceError(f"expected true or false, got {value!r}")


class PresetConfig:
    """Mixin for attrs config classes: ``for_preset(name)`` and ``from_options(preset, options)``.

    Subclasses set ``presets``: preset name (``wspace_core.presets.PRESETS``) -> field values that
    differ from the defaults."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def for_preset(cls: type[C], name: str) -> C:
        if name not in PRESETS or name not in cls.presets:
            known = ", ".join(p for p in PRESETS if p in cls.presets)
            raise WspaceError(f"unknown preset {name!r} for {cls.__name__}; valid presets: {known}")
        return cls(**cls.presets[name])

    @classmethod
    def from_options(cls: type[C], preset: str, options: dict[str, Any], encoder: str) -> C:
        """The preset's config with ``options`` overriding fields; unknown options fail."""
        base = cls.for_preset(preset)
        valid = [f.name for f in attrs.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise WspaceError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for encoder {encoder!r}; "
                f"valid options: {', '.join(valid)}"
            )
        try:
            return attrs.evolve(base, **options)
        except WspaceError as error:
            named = [key for key in options if not _accepts(base, key, options[key])]
            which = f"option {named[0]!r}" if len(named) == 1 else "option value"  # else: they clash together
            raise WspaceError(f"encoder {encoder!r}: bad {which}: {error}") from None


def _accepts(config, key: str, value: Any) -> bool:
    """Whether ``config`` takes ``key=value`` alone."""
    try:
        attrs.evolve(config, **{key: value})
    except WspaceError:
        return False
    return True


@attrs.frozen
class WeightEncoderConfig(PresetConfig):
    """Options every bundled mechanistic encoder has. ``input_scale``: multiply each parameter
    tensor by a learned scale initialised to √fan-in before encoding (a wspace option; neither
    the paper nor the published code scales the weights, so it is off by default)."""

    input_scale: bool = attrs.field(default=False, converter=boolean, kw_only=True)
