"""The bundled probing strategies: learned static sequences and interactive probing.

Both follow Herrmann et al. 2024, §3: learned probe embeddings S_t (one per step and parallel
probe) pass through the input MLP E_I to give the probe inputs (softmax over tokens for one-hot
inputs, sigmoid for continuous ones). The interactive strategy also feeds E_I the encoder's
running summary, so later probes depend on what the networks answered.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from wspace_core.probing import ProbingContext, ProbingStrategy
from wspace_probing.mlp import mlp


class StaticProbing(ProbingStrategy):
    """Non-interactive: P learned probe sequences of length T, the same for every network."""

    adaptive = False

    def __init__(self, context: ProbingContext):
        super().__init__(context)
        c = context
        self.embeddings = nn.Parameter(torch.randn(c.length, c.num_probes, c.hidden_size))  # S: (T, P, E)
        self.input_mlp = mlp(c.hidden_size, c.hidden_size, c.hidden_layers, c.input_size)  # E_I

    def all_probes(self, summary: torch.Tensor) -> torch.Tensor:
        probes = self.activate(self.input_mlp(self.embeddings))  # (T, P, I)
        return probes.unsqueeze(0).expand(summary.shape[0], *probes.shape)  # (M, T, P, I)

    def forward(self, t, summary, last_output):
        probes = self.activate(self.input_mlp(self.embeddings[t]))  # (P, I)
        return probes.unsqueeze(0).expand(summary.shape[0], *probes.shape)  # (M, P, I)


class InteractiveProbing(ProbingStrategy):
    """Interactive: E_I([S_t, summary_{t-1}]), so the probes at step t depend on every answer before t.

    E_I's first layer on the concatenation is split into W_s S_t + W_r summary, so the summary
    part is computed once per network, not once per network and probe.
    """

    def __init__(self, context: ProbingContext):
        super().__init__(context)
        c = context
        self.embeddings = nn.Parameter(torch.randn(c.length, c.num_probes, c.hidden_size))  # S: (T, P, E)
        first_out = c.hidden_size if c.hidden_layers > 0 else c.input_size
        self.from_embedding = nn.Linear(c.hidden_size, first_out)  # W_s, b
        self.from_summary = nn.Linear(c.summary_size, first_out, bias=False)  # W_r
        self.rest = (mlp(c.hidden_size, c.hidden_size, c.hidden_layers - 1, c.input_size)
                     if c.hidden_layers > 0 else nn.Identity())
        self._relu_first = c.hidden_layers > 0

    def forward(self, t, summary, last_output):
        pre = self.from_embedding(self.embeddings[t]) + rearrange(self.from_summary(summary),
                                                                  "m h -> m 1 h")  # (M, P, H)
        if self._relu_first:
            pre = pre.relu()
        return self.activate(self.rest(pre))  # (M, P, I)
