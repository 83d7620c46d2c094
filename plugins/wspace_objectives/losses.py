"""The bundled emulation objectives.

The paper's published code (``training_script.py``) trains with ``criterion = total_variation``
(its argparse default and every config of ``training_configs.py``; the paper's text says reverse
KL): ½Σ|q − p| at every one of the T rollout positions, averaged over all positions (nothing
masked after EOS), then over rollouts and networks; its ``kl_reverse`` criterion is KL(q ‖ p)
averaged (not summed) over the classes. ``TotalVariation`` over all positions is that published
objective, ``ReverseKLClassMean`` the published ``kl_reverse``; ``ReverseKL`` (summed over the
classes) is wspace's own choice. Which positions count is the pretraining's ``loss_positions``.

Categorical objectives compare the emulator's distribution q = softmax(pred) with the network's
stored distribution p = exp(target) at every rollout step. Targets are stored as float16
log-probabilities, so they are cast to float32, floored at ``LOG_PROB_FLOOR`` (a -inf or very
negative log-probability is a p of 0) and renormalised (float16 rounding leaves Σp slightly off 1).
Every objective returns the (M,) per-network mean over the steps that count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wspace_core.objective import EmulationMetric, Objective, masked_mean

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


#: what pretraining reports for categorical outputs whatever it optimises: the published code's
#: two figures (its default criterion, and the reverse KL the paper's text names, as that code
#: computes it) next to wspace's own masked ones
CATEGORICAL_REPORT = (
    EmulationMetric("published_total_variation", "total_variation", "all", published=True,
                    description="the published code's validation loss: ½Σ|q−p| per step, mean over all "
                                "T steps (no mask), rollouts and networks"),
    EmulationMetric("published_reverse_kl", "reverse_kl_class_mean", "all", published=True,
                    description="the published code's kl_reverse: KL(q‖p) averaged over the classes per "
                                "step, mean over all T steps, rollouts and networks"),
    EmulationMetric("reverse_kl", "reverse_kl", "masked",
                    description="wspace: KL(q‖p) summed over the classes, mean over the steps the task "
                                "counts (formal languages: up to the first EOS)"),
    EmulationMetric("total_variation", "total_variation", "masked",
                    description="wspace: ½Σ|q−p| per step, mean over the steps the task counts"),
)

CONTINUOUS_REPORT = (
    EmulationMetric("mse", "mse", "masked", description="mean squared error per step, over the steps that count"),
)


class CategoricalObjective(Objective):
    """Base of the categorical objectives: the emulator's logits and the network's normalised
    log-probabilities, compared per step by ``per_step``, averaged per network over the steps
    that count. They report ``CATEGORICAL_REPORT``."""

    output_kind = "categorical"
    report_metrics = CATEGORICAL_REPORT

    def forward(self, pred, target, mask=None):
        dtype = _compute_dtype(pred)
        logits = pred.to(dtype)  # (M, N, T, O) emulator
        log_p = network_log_probs(target, mask, dtype)  # (M, N, T, O) network
        return _per_network(self.per_step(logits, log_p), mask)

    def per_step(self, logits: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        """(M, N, T, O) emulator logits and network log-probabilities -> (M, N, T) the loss."""
        raise NotImplementedError


class ReverseKL(CategoricalObjective):
    """Reverse KL(q_emulator ‖ p_network) per step, summed over the classes (the divergence the
    paper's text names; wspace's own choice, with ``loss_positions = "masked"``)."""

    @staticmethod
    def over_classes(terms: torch.Tensor) -> torch.Tensor:
        return terms.sum(-1)

    def per_step(self, logits, log_p):
        log_q = torch.log_softmax(logits, dim=-1)
        return self.over_classes(log_q.exp() * (log_q - log_p))


class ReverseKLClassMean(ReverseKL):
    """Reverse KL(q_emulator ‖ p_network) per step averaged over the O classes, i.e. KL / O: the
    published code's ``kl_reverse`` criterion."""

    @staticmethod
    def over_classes(terms: torch.Tensor) -> torch.Tensor:
        return terms.mean(-1)


class TotalVariation(CategoricalObjective):
    """Total variation distance ½ Σ|q − p| per step, between emulator and network distributions
    (over all steps: the published code's default criterion, and wspace's default)."""

    def per_step(self, logits, log_p):
        return 0.5 * (torch.softmax(logits, dim=-1) - log_p.exp()).abs().sum(-1)


class CrossEntropy(CategoricalObjective):
    """Cross-entropy −Σ p log q per step: the emulator q fitted to the network's soft labels p."""

    def per_step(self, logits, log_p):
        return -(log_p.exp() * torch.log_softmax(logits, dim=-1)).sum(-1)


class MeanSquaredError(Objective):
    """Mean squared error per step, averaged over output units (for continuous outputs)."""

    output_kind = "continuous"
    report_metrics = CONTINUOUS_REPORT

    def forward(self, pred, target, mask=None):
        dtype = _compute_dtype(pred)
        se = F.mse_loss(pred.to(dtype), target.to(dtype), reduction="none").mean(-1)  # (M, N, T)
        return _per_network(se, mask)
