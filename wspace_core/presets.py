"""The named scales a run comes in. Every plugin that sizes itself by preset (a task family's
zoo, an encoder's widths) keys its per-preset values by these names, and the application reads
its own per-preset values (``wspace.presets``) under the same names."""

from __future__ import annotations

from wspace_core.registry import WspaceError

#: smoke: seconds, for tests and wiring checks; quick: minutes on a laptop CPU; paper: the paper's sizes
PRESETS: tuple[str, ...] = ("smoke", "quick", "paper")


def check_preset(name: object, what: str = "preset") -> str:
    """``name`` if it is one of PRESETS, else a WspaceError naming them."""
    if name not in PRESETS:
        raise WspaceError(f"unknown {what} {name!r}; presets: {', '.join(PRESETS)}")
    return name  # type: ignore[return-value]
