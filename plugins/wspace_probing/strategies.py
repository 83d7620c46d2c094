"""The bundled probing strategies: learned static sequences and interactive probing, as in the
published ``InteractiveEncoder`` (Herrmann et al. 2024, §3; ``modules_rnn_encoders.py``).

Both make the probes of step t in two stages: a source vector of the core's width is projected
to one encoding per parallel probe (``Linear(summary_size, P·hidden_size)`` + ReLU: each probe
its own projection), and the shared decoder E_I (an MLP with ``hidden_layers`` hidden layers of
``hidden_size``) turns each encoding into the probe input (softmax over tokens for one-hot inputs,
sigmoid for continuous ones). The static strategy's source is a learned vector S_t per step, the
same for every network (non-interactive probing); the interactive strategy's source is the core's
running summary of every answer so far (interactive probing).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from wspace_core.probing import ProbingContext, ProbingStrategy
from wspace_probing.mlp import mlp


class ProbeDecoder(nn.Module):
    """(..., summary_size) -> (..., P, input_size): each probe's own projection, then E_I."""

    def __init__(self, context: ProbingContext):
        super().__init__()
        c = context
        self.num_probes = c.num_probes
        self.project = nn.Linear(c.summary_size, c.num_probes * c.hidden_size)  # one encoding per probe
        self.decoder = mlp(c.hidden_size, c.hidden_size, c.hidden_layers, c.input_size)  # E_I

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        encodings = rearrange(self.project(source).relu(), "... (p e) -> ... p e", p=self.num_probes)
        return self.decoder(encodings)  # (..., P, I) logits


class StaticProbing(ProbingStrategy):
    """Non-interactive: P learned probe sequences of length T, the same for every network."""

    adaptive = False

    def __init__(self, context: ProbingContext):
        super().__init__(context)
        c = context
        self.embeddings = nn.Parameter(torch.randn(c.length, c.summary_size))  # S: (T, H)
        self.probe = ProbeDecoder(c)

    def all_probes(self, summary: torch.Tensor) -> torch.Tensor:
        probes = self.activate(self.probe(self.embeddings))  # (T, P, I)
        return probes.unsqueeze(0).expand(summary.shape[0], *probes.shape)  # (M, T, P, I)

    def forward(self, t, summary, last_output):
        probes = self.activate(self.probe(self.embeddings[t]))  # (P, I)
        return probes.unsqueeze(0).expand(summary.shape[0], *probes.shape)  # (M, P, I)


class InteractiveProbing(ProbingStrategy):
    """Interactive: each step's probes are decoded from the core's summary of the answers so far.

    The summary at step t has read every answer before t, so the probes depend on what the
    network answered."""

    def __init__(self, context: ProbingContext):
        super().__init__(context)
        self.probe = ProbeDecoder(context)

    def forward(self, t, summary, last_output):
        return self.activate(self.probe(summary))  # (M, P, I)
