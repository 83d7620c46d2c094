"""The bundled emulation objectives.

Categorical objectives compare the emulator's distribution q = softmax(pred) with the network's
stored distribution p = exp(target) at every rollout step. Targets are stored as float16
log-probabilities, so they are cast to float32, floored at ``LOG_PROB_FLOOR`` (a -inf or very
negative log-probability is a p of 0) and renormalised (float16 rounding leaves Σp slightly off 1).
Every objective returns the (M,) per-network mean over the steps that count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wspace_core.objective import Objective, masked_mean

#: Log-probabilities are floored here: exp(-80) ≈ 2e-35 is negligible next to any probability that
#: matters yet still a normal float32 (no slow denormals), and the floor keeps log p finite, so a
#: p of 0 contributes 0 to cross-entropy and total variation and no -inf or NaN reaches the loss.
LOG_PROB_FLOOR = -80.0


def _compute_dtype(pred: torch.Tensor) -> torch.dtype:
    """float32 at least (half-precision emulator outputs and float16 targets are upcast)."""
    return torch.promote_types(pred.dtype, torch.float32)


def network_log_probs(target: torch.Tensor, mask: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(M, N, T, O) stored log-probabilities -> normalised, finite log-probabilities.
    Masked-out steps become uniform, so whatever is stored there (even NaN) stays inert."""
    logp = target.to(dtype).clamp_min(LOG_PROB_FLOOR)
    if mask is not None:
        logp = torch.where(mask.bool().unsqueeze(-1), logp, torch.zeros((), dtype=dtype, device=logp.device))
    return torch.log_softmax(logp, dim=-1)


def _per_network(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """values (M, N, T) -> (M,); masked-out steps are zeroed first, so whatever is stored there
    (padding after EOS) cannot leak into the mean."""
    if mask is not None:
        values = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return masked_mean(values, mask)


class ReverseKL(Objective):
    """Reverse KL(q_emulator ‖ p_network) per step (the paper's choice for categorical outputs)."""

    output_kind = "categorical"

    def forward(self, pred, target, mask=None):
        dtype = _compute_dtype(pred)
        log_q = torch.log_softmax(pred.to(dtype), dim=-1)  # (M, N, T, O)
        log_p = network_log_probs(target, mask, dtype)
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)  # (M, N, T)
        return _per_network(kl, mask)


class TotalVariation(Objective):
    """Total variation distance ½ Σ|q − p| per step, between emulator and network distributions."""

    output_kind = "categorical"

    def forward(self, pred, target, mask=None):
        dtype = _compute_dtype(pred)
        q = torch.softmax(pred.to(dtype), dim=-1)
        p = network_log_probs(target, mask, dtype).exp()
        tv = 0.5 * (q - p).abs().sum(-1)  # (M, N, T)
        return _per_network(tv, mask)


class CrossEntropy(Objective):
    """Cross-entropy −Σ p log q per step: the emulator q fitted to the network's soft labels p."""

    output_kind = "categorical"

    def forward(self, pred, target, mask=None):
        dtype = _compute_dtype(pred)
        log_q = torch.log_softmax(pred.to(dtype), dim=-1)
        p = network_log_probs(target, mask, dtype).exp()
        ce = -(p * log_q).sum(-1)  # (M, N, T)
        return _per_network(ce, mask)


class MeanSquaredError(Objective):
    """Mean squared error per step, averaged over output units (for continuous outputs)."""

    output_kind = "continuous"

    def forward(self, pred, target, mask=None):
        dtype = _compute_dtype(pred)
        se = F.mse_loss(pred.to(dtype), target.to(dtype), reduction="none").mean(-1)  # (M, N, T)
        return _per_network(se, mask)
