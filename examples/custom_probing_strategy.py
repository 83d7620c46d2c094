"""A third-party probing strategy, "self_feedback": feed each network its own most likely output
as its next input — the constructive strategy of Herrmann et al. 2024, Prop. 3.3 (a network run
on its own predictions reveals the sequences it generates).

Self-contained: this module is a complete wspace plugin. Register it for a session with::

    from wspace_core import plugins
    import custom_probing_strategy as module     # or load it by path
    plugins.pm.register(module)
    plugins.reset()                              # forget registries collected before
    encoder = plugins.encoders().get("interactive_probing")(context)  # with
    # context.options == {"probing_strategy": "self_feedback"}

or call ``custom_probing_strategy.register_plugin()`` (and ``unregister_plugin()``) which do the
same. To install it permanently, package it and declare the entry point::

    [project.entry-points.wspace]
    custom_probing_strategy = "custom_probing_strategy"

Gradients: argmax has none, so one-hot feedback uses a straight-through estimator: the forward
value is one_hot(argmax(y)) up to float rounding (the network really receives its own token), the backward
pass is that of softmax(y / temperature). The alternative, a low-temperature softmax, would feed
the network inputs that are not tokens; straight-through keeps the probes on the data manifold
while still letting gradients reach the learned start inputs through the whole feedback chain.
Continuous inputs are fed back through a learned linear map of sigmoid(y), squashed to [0, 1].
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wspace_core.hookspecs import hookimpl
from wspace_core.probing import ProbingContext, ProbingStrategy

#: name under which ``register_plugin`` registers this module with the plugin manager
PLUGIN_NAME = "custom_probing_strategy"


def straight_through_one_hot(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(..., K) -> one_hot(argmax) in the forward pass, d softmax(logits / temperature) backward."""
    soft = (logits / temperature).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


class SelfFeedbackProbing(ProbingStrategy):
    """Probe t+1 of each parallel sequence is the network's own most likely output at step t;
    probe 0 is a learned start input per parallel sequence (a BOS-like token distribution)."""

    temperature: float = 1.0

    def __init__(self, context: ProbingContext):
        super().__init__(context)
        c = context
        self.start = nn.Parameter(torch.randn(c.num_probes, c.input_size))  # (P, I) start logits
        if c.input_kind == "onehot":
            # output token k feeds input token k; a learned token map only if the vocabularies differ
            self.token_map = (None if c.output_size == c.input_size
                              else nn.Parameter(torch.randn(c.output_size, c.input_size)))
        else:
            self.feedback = nn.Linear(c.output_size, c.input_size)

    def forward(self, t, summary, last_output):
        if last_output is None:
            probes = self.activate(self.start)  # (P, I)
            return rearrange(probes, "p i -> 1 p i").expand(summary.shape[0], -1, -1)  # (M, P, I)
        if self.context.input_kind == "onehot":
            tokens = straight_through_one_hot(last_output, self.temperature)  # (M, P, O)
            if self.token_map is None:
                return tokens
            return tokens @ self.token_map.softmax(-1)  # (M, P, I), rows of a token distribution
        return self.feedback(last_output.sigmoid()).sigmoid()  # (M, P, I) in [0, 1]


@hookimpl
def register_probing_strategies(register):
    register("self_feedback", SelfFeedbackProbing)


def register_plugin() -> None:
    """Register this module with wspace's plugin manager for the running process."""
    from wspace_core import plugins

    module = sys.modules[__name__]
    if plugins.pm.get_plugin(PLUGIN_NAME) is None and not plugins.pm.is_registered(module):
        plugins.pm.register(module, name=PLUGIN_NAME)
    plugins.reset()


def unregister_plugin() -> None:
    """Undo ``register_plugin``."""
    from wspace_core import plugins

    module = sys.modules[__name__]
    if plugins.pm.is_registered(module):
        plugins.pm.unregister(module)
    plugins.reset()
