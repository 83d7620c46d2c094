"""Pretraining checkpoints: one file that lets a run continue exactly where it stopped.

A checkpoint holds the encoder's and emulator's weights, the optimiser, the RNG states (the
batch sampler's and torch's global one; under torchrun every rank's sampler as ``rng_ranks``)
and the loop's own fields (step, history, best state, early-stopping count). It holds tensors
and plain data only (loadable with ``weights_only=True``) and is replaced atomically. Under
torchrun rank 0 alone writes it; every rank restores from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from wspace.training import distributed
from wspace.validation import restore_checkpoint
from wspace_core.registry import WspaceError

if TYPE_CHECKING:
    from wspace.training.pretrain import Pretraining

#: the checkpoint's file name in a run's checkpoint directory
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, **payload) -> None:
    """Weights and plain data only (loadable with weights_only=True), written atomically: a write
    that fails (disk full, folder made read-only) leaves the previous checkpoint as it was."""
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as RuntimeError
        tmp.unlink(missing_ok=True)
        kept = f"the previous checkpoint {path} is intact" if path.exists() else "no checkpoint was kept"
        reason = err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())[:160]
        try:
            free = f"; {shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = ""
        raise WspaceError(f"cannot write the checkpoint {path} ({reason}{free}); {kept}. Free disk space or make "
                          f"the folder writable, then continue with `wspace run --resume {path.parent}`") from None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WspaceError(f"no checkpoint at {path}; start without --resume") from None
    except Exception as err:  # unpickling refused or damaged file
        raise WspaceError(
            f"checkpoint {path} cannot be loaded as plain weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); checkpoints must hold tensors and plain data only — "
            f"delete it and start the run again"
        ) from None


class Checkpointer:
    """Saves and restores one pretraining (``setup``) in ``directory`` (None: nothing is saved,
    though under torchrun the ranks still meet to gather their sampler states)."""

    def __init__(self, directory: Path | None, setup: Pretraining):
        self.path = None if directory is None else Path(directory) / CHECKPOINT_FILE
        self.setup = setup

    def save(self, fields: dict, collective: bool = True) -> None:
        """Weights, optimiser, RNG states and the loop's ``fields``; ``collective=False`` after an
        interrupt, when the other ranks may be gone (their sampler states are then left out)."""
        setup = self.setup
        rng = {"generator": setup.generator.get_state(), "torch": torch.get_rng_state()}
        per_rank = setup.ranks.gather(rng, collective)  # a job of the same size resumes exactly
        if self.path is None or not setup.ranks.ctx.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if per_rank is None else {"rng_ranks": per_rank}
        save_checkpoint(self.path, encoder=setup.encoder.state_dict(), emulator=setup.emulator.state_dict(),
                        optimizer=setup.optimizer.state_dict(), rng=rng, **fields, **extra)

    def restore(self) -> dict:
        """Load the checkpoint into the set-up's modules, optimiser and RNGs; returns it (the
        loop takes its own fields from it)."""
        if self.path is None:
            raise WspaceError("resuming needs a checkpoint directory")
        setup = self.setup
        state = load_checkpoint(self.path)
        restore_checkpoint(state, setup.encoder, setup.emulator, setup.optimizer, self.path)
        rng = distributed.restore_rank_rng(state, setup.ranks.ctx)
        if rng is not None:
            setup.generator.set_state(rng["generator"]), torch.set_rng_state(rng["torch"])
        else:  # a rank of a job larger than the one that wrote the checkpoint
            setup.generator.manual_seed(setup.ranks.sampler_seed(setup.seed) + state["step"])
        return state
