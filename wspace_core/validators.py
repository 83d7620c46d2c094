"""Small attrs validators that refuse a bad setting with a ``WspaceError`` worded by the caller.

A message is a ``str.format`` template with ``{name}`` (the field) and ``{value!r}`` (what was
given); factories add their own fields (``{lowest}``, ``{choices}``). The defaults are wspace's
plain wording; a plugin prefixes its own (``"tiled_mnist setting {name} must be ..."``).

    steps: int = attrs.field(default=10, validator=positive_int)
    rule: str = attrs.field(default="a", validator=one_of("a", "b"))

Outside attrs, ``positive_int.require("workers", workers)`` applies the same check to a value.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

from wspace_core.registry import WspaceError


def is_int(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@attrs.frozen(eq=False)
class Check:
    """An attrs validator: ``test(value)`` must hold, else ``WspaceError(message)``."""

    test: Callable[[Any], bool]
    message: str
    fields: dict[str, Any] = attrs.field(factory=dict)

    def require(self, name: str, value: Any) -> None:
        """Refuse ``value`` of the setting ``name`` unless it passes."""
        if not self.test(value):
            raise WspaceError(self.message.format(name=name, value=value, **self.fields))

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        self.require(attribute.name, value)


def int_at_least(lowest: int, message: str = "{name} must be an integer ≥ {lowest}, got {value!r}") -> Check:
    """An integer (not a bool) ≥ ``lowest``."""
    return Check(lambda value: is_int(value) and value >= lowest, message, {"lowest": lowest})


def one_of(*choices: Any, message: str = "{name} must be one of {choices}, got {value!r}") -> Check:
    """One of ``choices`` (listed in the message as ``{choices}``, comma-separated)."""
    return Check(lambda value: value in choices, message, {"choices": ", ".join(map(str, choices))})


def number_in(low: float, high: float, message: str, *, low_closed: bool = False,
              high_closed: bool = False) -> Check:
    """A number (int or float, not a bool) between ``low`` and ``high``; each end excluded unless
    ``low_closed`` / ``high_closed``."""
    def test(value: Any) -> bool:
        if not is_number(value):
            return False
        above = low <= value if low_closed else low < value
        below = value <= high if high_closed else value < high
        return above and below
    return Check(test, message)


positive_int = int_at_least(1, "{name} must be a positive integer, got {value!r}")
non_negative_int = int_at_least(0, "{name} must be a non-negative integer, got {value!r}")
positive_number = number_in(0, float("inf"), "{name} must be a positive (finite) number, got {value!r}")
#: NaN passes (as ever: a NaN is not below 0)
non_negative_number = Check(lambda value: is_number(value) and not value < 0,
                            "{name} must be a non-negative number, got {value!r}")
boolean = Check(lambda value: isinstance(value, bool), "{name} must be true or false, got {value!r}")
