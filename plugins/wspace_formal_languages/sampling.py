"""Batched autoregressive sampling: all M networks × S strings stepped at once, each model's
draws taken from its own generator (inverse CDF against uniforms drawn up front), so a batch of
M models gives exactly what M single-model calls with the same generators give."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from wspace_core.architecture import Architecture, Params
from wspace_core.registry import WspaceError
from wspace_formal_languages.language import BOS, NUM_SYMBOLS

#: at most this many (model, string) pairs are stepped in one call (bounds memory, not results)
MAX_SEQUENCES_PER_STEP = 1 << 17
#: the same bound on CPU: a step's tensors then stay in cache and no big temporaries are mapped
#: and unmapped per op (16 models x 600 strings: 0.80 instead of 1.15 CPU-s per evaluation,
#: 79 000 fewer page faults; benchmarks/zoo_build.py --end-to-end)
CPU_SEQUENCES_PER_STEP = 1 << 10


def draw_uniforms(generators: Sequence[torch.Generator], num_strings: int, num_steps: int,
                  device: torch.device | str) -> torch.Tensor:
    """(M, S, T) float32 uniforms in [0, 1); row m from ``generators[m]`` alone."""
    u = [torch.rand((num_strings, num_steps), generator=g, device=g.device) for g in generators]
    return torch.stack(u).to(device)


def sample_strings(arch: Architecture, params: Params, num_strings: int, num_steps: int,
                   generators: Sequence[torch.Generator], keep_log_probs: bool = False,
                   max_sequences_per_step: int | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample ``num_strings`` strings of ``num_steps`` tokens from each network, starting at BOS.

    Returns strings (M, S, T) long (token t is drawn from the output of step t) and, when
    ``keep_log_probs``, the log-softmax outputs (M, S, T, 6) float32 along them (else None).
    """
    first = next(iter(params.values()))
    M, device, dtype = first.shape[0], first.device, first.dtype
    if len(generators) != M:
        raise WspaceError(f"got {len(generators)} generators for {M} models; pass one torch.Generator per model")
    u = draw_uniforms(generators, num_strings, num_steps, device)  # (M, S, T)
    if max_sequences_per_step is None:
        max_sequences_per_step = CPU_SEQUENCES_PER_STEP if device.type == "cpu" else MAX_SEQUENCES_PER_STEP
    chunk = max(1, max_sequences_per_step // M)
    one_hot = torch.eye(NUM_SYMBOLS, device=device, dtype=dtype)  # one_hot[token]: (M, s, 6) inputs
    strings, log_probs = [], []
    with torch.no_grad():
        for s0 in range(0, num_strings, chunk):
            u_chunk = u[:, s0:s0 + chunk]  # (M, s, T)
            s = u_chunk.shape[1]
            state = arch.initial_state(params, s)
            token = torch.full((M, s), BOS, dtype=torch.long, device=device)
            tokens, outs = [], []
            for t in range(num_steps):
                y, state = arch.step(params, one_hot[token], state)  # (M, s, 6)
                logp = F.log_softmax(y.float(), dim=-1)
                if keep_log_probs:
                    outs.append(logp)
                cdf = logp.exp().cumsum(-1)  # (M, s, 6); the same draws with or without log-probs
                # inverse CDF: the number of cumulative probabilities ≤ u·total
                token = torch.searchsorted(cdf, u_chunk[..., t:t + 1] * cdf[..., -1:], right=True)
                token = token.squeeze(-1).clamp_max(NUM_SYMBOLS - 1)  # (M, s); clamp: float rounding at u→1
                tokens.append(token)
            strings.append(torch.stack(tokens, dim=2))
            if keep_log_probs:
                log_probs.append(torch.stack(outs, dim=2))
    return torch.cat(strings, dim=1), (torch.cat(log_probs, dim=1) if keep_log_probs else None)
