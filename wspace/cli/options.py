"""Option parsing shared by the commands."""

from __future__ import annotations

from wspace.config import tomllib
from wspace_core.registry import WspaceError


def key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """Repeated ``KEY=VALUE`` flags -> {key: value}; values read as TOML (numbers, booleans,
    quoted strings), anything else kept as the string given."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise WspaceError(f"{flag} takes KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out
