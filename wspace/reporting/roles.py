"""The parts a comparison's encoders and task family play, as their plugins declare them: an
encoder's ``role`` (the baseline, or which of the paper's encoders it reproduces), a task
family's ``paper_zoo`` and ``task_property``. Looked up by registered name, so a report
rebuilt from results.json reads them too; a name no plugin registers plays no part."""

from __future__ import annotations

from typing import Iterable

from wspace_core import plugins

BASELINE = "baseline"


def encoder_role(name: str) -> str | None:
    """The role encoder ``name`` declares (``Encoder.role``); None for none or an unregistered name."""
    registry = plugins.encoders()
    return getattr(registry.get(name), "role", None) if name in registry else None


def with_role(names: Iterable[str], role: str) -> str | None:
    """The first of ``names`` whose encoder declares ``role``, else None."""
    return next((name for name in names if encoder_role(name) == role), None)


def is_baseline(name: str) -> bool:
    return encoder_role(name) == BASELINE


def baseline_of(names: Iterable[str]) -> str | None:
    """The baseline among ``names`` (the first whose role is "baseline"), else None."""
    return with_role(names, BASELINE)


def _family_attribute(task: str, attribute: str) -> str | None:
    registry = plugins.task_families()
    return getattr(registry.get(task), attribute, None) if task in registry else None


def paper_zoo(task: str) -> str | None:
    """Which of the paper's zoos task family ``task`` reproduces (``TaskFamily.paper_zoo``)."""
    return _family_attribute(task, "paper_zoo")


def task_property(task: str) -> str | None:
    """The property that identifies a network's task in family ``task`` (``TaskFamily.task_property``)."""
    return _family_attribute(task, "task_property")


def baseline_encoder() -> str:
    """The one registered encoder whose role is the baseline (the floor `wspace run` and
    `wspace compare` train beside every encoder)."""
    from wspace_core.registry import WspaceError

    names = [name for name in plugins.encoders().names() if encoder_role(name) == BASELINE]
    if not names:
        raise WspaceError(f"no registered encoder declares role {BASELINE!r}; install or enable the plugin "
                          f"that provides the baseline (see `wspace plugins`)")
    if len(names) > 1:
        raise WspaceError(f"encoders {', '.join(names)} all declare role {BASELINE!r}; uninstall one, or limit "
                          f"installed plugins with WSPACE_LOAD_PLUGINS")
    return names[0]
