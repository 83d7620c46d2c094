"""Encoders found by the part they declare (``wspace_core.encoder.Encoder.role``), never by name:
the application asks the registry for "the baseline" and does not spell a plugin's encoder."""

from __future__ import annotations

from wspace_core import plugins
from wspace_core.registry import WspaceError

#: the role of the floor every encoder must beat (a z that carries nothing about the network)
BASELINE = "baseline"


def encoders_with_role(role: str) -> list[str]:
    """Names of the registered encoders declaring ``role``, sorted."""
    registry = plugins.encoders()
    return [name for name in registry.names() if getattr(registry.get(name), "role", None) == role]


def baseline_encoder() -> str:
    """The name of the one registered encoder whose role is the baseline."""
    names = encoders_with_role(BASELINE)
    if not names:
        raise WspaceError(f"no registered encoder declares role {BASELINE!r}; install or enable the plugin "
                          f"that provides the baseline (see `wspace plugins`)")
    if len(names) > 1:
        raise WspaceError(f"encoders {', '.join(names)} all declare role {BASELINE!r}; uninstall one, or limit "
                          f"installed plugins with WSPACE_LOAD_PLUGINS")
    return names[0]
