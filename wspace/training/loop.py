"""The pretraining loop: steps, evaluations, checkpoints and early stopping over a set-up
pretraining (``wspace.training.pretrain.Pretraining``: what one step and one evaluation do).

The loop evaluates at step 0 (the untrained floor; not again after a resume), every
``eval_every`` steps and at the last one; records each evaluation in the history and logs it;
keeps the best state on the set-up's selection figure (``BestState``) and stops after
``patience`` evaluations without improvement (0: never); checkpoints every ``checkpoint_every``
steps, at the end, and on Ctrl-C (``Checkpointer``). What is particular to torchrun lives in the
set-up's ``RankShare`` (``wspace.training.distributed``); here only rank 0 logs.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable

import attrs
import torch

from wspace.validation import check_finite_loss

if TYPE_CHECKING:
    from wspace.training.checkpoint import Checkpointer
    from wspace.training.pretrain import Pretraining

#: the key the training loss is logged under, whatever objective is trained
TRAIN_LOSS = "train/loss"
#: the training loss is logged (and under torchrun summed over the ranks) every this many steps
LOG_EVERY = 10


@attrs.frozen
class PretrainProgress:
    step: int
    total: int
    loss: float
    elapsed_s: float
    last_eval: dict | None = None


@attrs.define
class BestState:
    """The best selection figure so far, its step, its metrics and the weights then, and how many
    evaluations have passed without improving on it: early stopping after ``patience`` of them
    (0: never)."""

    patience: int
    loss: float = math.inf
    step: int = 0
    metrics: dict = attrs.field(factory=dict)
    weights: dict | None = None
    stale_evals: int = 0

    def offer(self, loss: float, step: int, metrics: dict, weights: Callable[[], dict]) -> None:
        """An evaluation's figure: kept, with a copy of the weights, when it improves."""
        if loss < self.loss:
            self.loss, self.step, self.metrics, self.weights = loss, step, metrics, weights()
            self.stale_evals = 0
        else:
            self.stale_evals += 1

    @property
    def patience_spent(self) -> bool:
        return bool(self.patience) and self.stale_evals >= self.patience


@attrs.define
class LoopState:
    """What the loop carries from step to step, and what a checkpoint keeps of it."""

    best: BestState
    step: int = 0
    history: list[dict] = attrs.field(factory=list)

    def checkpoint_fields(self) -> dict:
        best = self.best
        return dict(step=self.step, history=self.history, stale_evals=best.stale_evals, best_loss=best.loss,
                    best_step=best.step, best_metrics=best.metrics, best_state=best.weights)

    @classmethod
    def from_checkpoint(cls, state: dict, patience: int) -> LoopState:
        best = BestState(patience, state["best_loss"], state["best_step"], state["best_metrics"],
                         state.get("best_state"), state["stale_evals"])
        return cls(best, state["step"], list(state["history"]))


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


class PretrainLoop:
    """Trains ``setup`` to ``config.steps`` (or until patience runs out), checkpointing through
    ``checkpoints``; ``log_metrics(metrics, step)`` and ``progress(PretrainProgress)`` are told
    along the way."""

    def __init__(self, setup: Pretraining, checkpoints: Checkpointer,
                 log_metrics: Callable[[dict, int], None] | None = None,
                 progress: Callable[[PretrainProgress], None] | None = None):
        self.setup, self.checkpoints, self.progress = setup, checkpoints, progress
        self.log = log_metrics if setup.ranks.ctx.is_main else None  # rank 0 alone logs
        self.state = LoopState(BestState(setup.config.patience))
        self.stopped_early = False

    def resume(self) -> None:
        """Continue from the checkpoint: weights, optimiser, RNG states and the loop's state."""
        self.state = LoopState.from_checkpoint(self.checkpoints.restore(), self.setup.config.patience)

    def run(self) -> float:
        """Train; returns the seconds it took. The best state stays in ``state.best``."""
        config, state = self.setup.config, self.state
        start, last_eval = time.perf_counter(), None
        model = self.setup.model()
        if state.step == 0:
            last_eval = self._evaluate()
        try:
            while state.step < config.steps:
                loss = self.setup.train_step(model, state.step)
                state.step += 1
                self._report_loss(loss)
                if _due(state.step, config.eval_every, config.steps):
                    last_eval = self._evaluate()
                if self.progress:
                    self.progress(PretrainProgress(state.step, config.steps, loss.item(),
                                                   time.perf_counter() - start, last_eval))
                if _due(state.step, config.checkpoint_every, config.steps):
                    self.checkpoints.save(state.checkpoint_fields())
                if state.best.patience_spent:
                    self.stopped_early = True
                    break
        except KeyboardInterrupt:
            self.checkpoints.save(state.checkpoint_fields(), collective=False)
            raise
        self.checkpoints.save(state.checkpoint_fields())
        return time.perf_counter() - start

    def _report_loss(self, loss: torch.Tensor) -> None:
        """Stop on a diverged loss; log the loss every LOG_EVERY steps and at the last one."""
        step, last = self.state.step, self.setup.config.steps
        reported = _due(step, LOG_EVERY, last)
        value = self.setup.ranks.batch_loss(loss, reported)
        if value is None:
            return
        check_finite_loss(value, step, self.setup.config)
        if reported and self.log:
            self.log({TRAIN_LOSS: value}, step)

    def _evaluate(self) -> dict[str, dict[str, float]]:
        """Evaluate, record, log, and offer the result to the best state (rank 0's count for all)."""
        setup, state = self.setup, self.state
        metrics = setup.evaluate()
        flat = {f"{split}/{name}": value for split, values in metrics.items() for name, value in values.items()}
        state.history.append({"step": state.step, **flat})
        if self.log:
            self.log(flat, state.step)
        state.best.offer(setup.selection_loss(metrics), state.step, metrics, setup.weights)
        state.best.stale_evals = setup.ranks.agree(state.best.stale_evals)
        return metrics
