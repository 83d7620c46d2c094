"""The core's attrs validator factories: what they accept, what they refuse, and the message the
caller words (``{name}``, ``{value!r}`` and the factory's own fields)."""

from __future__ import annotations

import math

import attrs
import pytest

from wspace_core.registry import WspaceError
from wspace_core.validators import (
    int_at_least, non_negative_int, non_negative_number, number_in, one_of, positive_int, positive_number,
)


@attrs.frozen
class Settings:
    steps: int = attrs.field(default=1, validator=positive_int)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    lr: float = attrs.field(default=0.1, validator=positive_number)
    decay: float = attrs.field(default=0.0, validator=non_negative_number)
    rule: str = attrs.field(default="a", validator=one_of("a", "b"))
    share: float = attrs.field(default=0.5, validator=number_in(0, 1, "{name} lies in [0, 1), got {value!r}",
                                                                 low_closed=True))
    tokens: int = attrs.field(default=5, validator=int_at_least(3, "plugin setting {name} must be ≥ {lowest}; "
                                                                    "got {value!r}"))


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be a positive integer, got 0"),
    ("steps", True, "steps must be a positive integer, got True"),
    ("steps", 2.0, "steps must be a positive integer, got 2.0"),
    ("seed", -1, "seed must be a non-negative integer, got -1"),
    ("lr", 0, "lr must be a positive (finite) number, got 0"),
    ("lr", math.inf, "lr must be a positive (finite) number, got inf"),
    ("lr", "1e-3", "lr must be a positive (finite) number, got '1e-3'"),
    ("decay", -0.5, "decay must be a non-negative number, got -0.5"),
    ("rule", "c", "rule must be one of a, b, got 'c'"),
    ("share", 1.0, "share lies in [0, 1), got 1.0"),
    ("share", False, "share lies in [0, 1), got False"),
    ("tokens", 2, "plugin setting tokens must be ≥ 3; got 2"),
])
def test_refused_with_the_callers_message(field, value, message):
    with pytest.raises(WspaceError) as err:
        Settings(**{field: value})
    assert str(err.value) == message


def test_accepted_values_at_the_ends():
    Settings(steps=1, seed=0, lr=1e-12, decay=0, rule="b", share=0.0, tokens=3)
    Settings(decay=math.nan)  # a NaN is not below 0: accepted, as before the validators were shared


def test_require_checks_a_plain_value():
    positive_int.require("workers", 4)
    with pytest.raises(WspaceError, match=r"^workers must be a positive integer, got 0$"):
        positive_int.require("workers", 0)
