"""Hook specifications: the whole extension surface of wspace.

Every hook receives a ``register`` callback. Call it once per thing the plugin provides:
``register(name, factory)``. The core validates names in one place (see ``wspace_core.plugins``).
"""

import pluggy

hookspec = pluggy.HookspecMarker("wspace")
hookimpl = pluggy.HookimplMarker("wspace")


@hookspec
def register_architectures(register):
    """Register recurrent architectures: ``register(name, cls)``, cls a ``wspace_core.architecture.Architecture`` subclass."""


@hookspec
def register_task_families(register):
    """Register task families: ``register(name, cls)``, cls a ``wspace_core.task.TaskFamily`` subclass."""


@hookspec
def register_encoders(register):
    """Register weight encoders: ``register(name, cls)``, cls a ``wspace_core.encoder.Encoder`` subclass."""


@hookspec
def register_probing_strategies(register):
    """Register probing strategies for functionalist encoders: ``register(name, cls)``, cls a ``wspace_core.probing.ProbingStrategy`` subclass."""


@hookspec
def register_objectives(register):
    """Register emulation objectives: ``register(name, cls)``, cls a ``wspace_core.objective.Objective`` subclass."""


@hookspec
def register_heads(register):
    """Register property-prediction heads: ``register(name, cls)``, cls a ``wspace_core.objective.Head`` subclass."""
