"""The probing-strategy contract: how a functionalist encoder chooses its next probe inputs."""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import nn


@attrs.frozen
class ProbingContext:
    num_probes: int  # P parallel probing sequences per network
    length: int  # T probing steps
    input_size: int
    output_size: int
    input_kind: Literal["onehot", "continuous"]
    summary_size: int  # width of the encoder's running summary (its core RNN output)
    hidden_size: int = 128  # width of the strategy's own MLPs


class ProbingStrategy(nn.Module):
    """Registered as a factory ``cls(context)``.

    ``forward`` is called once per probing step t = 0..length-1 with what the encoder has seen so far
    and returns the probe inputs for every network: (M, P, input_size), a distribution over tokens
    (softmax) for one-hot inputs, values in [0, 1] (sigmoid) for continuous ones.
    """

    def __init__(self, context: ProbingContext):
        super().__init__()
        self.context = context

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.context.input_kind == "onehot" else logits.sigmoid()

    def forward(self, t: int, summary: torch.Tensor, last_output: torch.Tensor | None
                ) -> torch.Tensor:
        """t: step; summary: (M, summary_size) the encoder's running summary of every answer so far
        (zeros at t=0);
        last_output: (M, P, output_size) the networks' previous raw outputs (None at t=0)."""
        raise NotImplementedError
