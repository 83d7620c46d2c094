"""The probing-strategy contract: how a functionalist encoder chooses its next probe inputs."""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs
import torch
from torch import nn

from wspace_core.registry import WspaceError


@attrs.frozen
class ProbingContext:
    num_probes: int  # P parallel probing sequences per network
    length: int  # T probing steps
    input_size: int
    output_size: int
    input_kind: Literal["onehot", "continuous"]
    summary_size: int  # width of the encoder's running summary (its core RNN output)
    hidden_size: int = 128  # width of the strategy's own MLPs
    hidden_layers: int = 1  # number of hidden layers of the strategy's own MLPs


class ProbingStrategy(nn.Module):
    """Registered as a factory ``cls(context)``.

    ``forward`` is called once per probing step t = 0..length-1 with what the encoder has seen so far
    and returns the probe inputs for every network: (M, P, input_size), a distribution over tokens
    (softmax) for one-hot inputs, values in [0, 1] (sigmoid) for continuous ones.
    """

    #: False when the probes depend on the step t alone (never on ``summary`` or ``last_output``):
    #: an encoder may then ask for all of them at once with ``all_probes`` before stepping any network.
    adaptive: ClassVar[bool] = True

    def __init__(self, context: ProbingContext):
        super().__init__()
        self.context = context

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.context.input_kind == "onehot" else logits.sigmoid()

    def forward(self, t: int, summary: torch.Tensor, last_output: torch.Tensor | None
                ) -> torch.Tensor:
        """t: step; summary: (M, summary_size) the encoder's running summary of every answer so far
        (at t=0, before any answer, the bundled encoders pass their core's output on its start
        step, the same for every network);
        last_output: (M, P, output_size) the networks' previous raw outputs (None at t=0)."""
        raise NotImplementedError

    def all_probes(self, summary: torch.Tensor) -> torch.Tensor:
        """Every step's probes of a non-adaptive strategy at once: (M, T, P, input_size).
        ``summary``: (M, summary_size) zeros (gives M, device and dtype). Override for speed."""
        if self.adaptive:
            raise WspaceError(f"{type(self).__name__} is adaptive: its probes depend on the answers, "
                              f"so they cannot be computed before stepping the networks")
        return torch.stack([self(t, summary, None) for t in range(self.context.length)], dim=1)
