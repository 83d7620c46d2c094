"""Functionalist probing encoders (Herrmann et al. 2024, §3) and the bundled probing strategies.

Encoders: "noninteractive_probing" (default strategy "static"), "interactive_probing" (default
"interactive"); either takes ``options={"probing_strategy": name}`` for any registered strategy.
"""

from wspace_core.hookspecs import hookimpl
from wspace_probing.config import PRESETS, ProbingConfig
from wspace_probing.encoder import (InteractiveProbingEncoder, NoninteractiveProbingEncoder,
                                    ProbingEncoder, ProbingTrace)
from wspace_probing.strategies import InteractiveProbing, StaticProbing

__all__ = ["PRESETS", "ProbingConfig", "ProbingEncoder", "NoninteractiveProbingEncoder",
           "InteractiveProbingEncoder", "ProbingTrace", "StaticProbing", "InteractiveProbing"]


@hookimpl
def register_encoders(register):
    register("noninteractive_probing", NoninteractiveProbingEncoder)
    register("interactive_probing", InteractiveProbingEncoder)


@hookimpl
def register_probing_strategies(register):
    register("static", StaticProbing)
    register("interactive", InteractiveProbing)
