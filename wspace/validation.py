"""Checks made before any work starts: seeds, the sizes an encoder would allocate, writable
output folders. Each failure is a ``WspaceError`` naming the fix, raised before a zoo is built
or a step is trained (what fails late fails after hours)."""

from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path

from wspace_core.registry import WspaceError

#: seeds are 32-bit unsigned integers: numpy's and torch's generators take them, and every seed
#: derived from one (per rank, per network) stays inside 64 bits
MAX_SEED = 2**32 - 1

#: bytes per trainable parameter while pretraining in float32: the weights, their gradients,
#: AdamW's two moments, the best state kept for early stopping and the checkpoint being written
BYTES_PER_PARAMETER = 4 * 6


def check_seed(value, what: str = "seed") -> int:
    """``value`` is an integer seed in 0..MAX_SEED."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise WspaceError(f"{what} must be an integer from 0 to {MAX_SEED}, got {value!r}")
    return value


def check_seed_field(instance, attribute, value) -> None:
    """An attrs validator: ``check_seed`` naming the field."""
    check_seed(value, attribute.name)


# ---- memory -------------------------------------------------------------------------------------

def available_memory(device: str) -> int | None:
    """Bytes that can still be allocated on ``device`` (None when unknown)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:,.1f} GiB"


def count_parameters(name: str, context) -> int | None:
    """Trainable parameters of encoder ``name`` built for ``context``, counted on the meta device
    (no memory allocated); bad options raise the encoder's own error. None when the encoder
    cannot be built without real tensors."""
    import torch

    from wspace.training.pretrain import build_encoder

    try:
        with torch.device("meta"):
            encoder = build_encoder(name, context)
    except WspaceError:
        raise
    except (NotImplementedError, RuntimeError):  # an encoder whose set-up needs real data
        return None
    return sum(p.numel() for p in encoder.parameters())


def check_encoder_fits(name: str, context, device: str) -> None:
    """Refuse an encoder whose parameters (with gradients, optimiser state and copies) would not
    fit in the memory ``device`` has left: the estimate is made before anything is allocated."""
    params = count_parameters(name, context)
    if params is None:
        return
    need = params * BYTES_PER_PARAMETER
    have = available_memory(device)
    if have is not None and need > have:
        options = ", ".join(f"{k}={v}" for k, v in sorted(context.options.items())) or "its preset sizes"
        raise WspaceError(
            f"encoder {name!r} with {options} has {params:,} parameters: training it needs about "
            f"{_gib(need)} on {device}, which has {_gib(have)} free; lower its size options "
            f"(--encoder-option, e.g. hidden, length, num_probes) or use a smaller --preset"
        )


#: float32 values an emulator layer keeps per time step and hidden unit for the backward pass
#: (an LSTM's four gates, cell and hidden state, their activations): a generous round figure
EMULATOR_VALUES_PER_UNIT = 12


def check_batch_fits(config, context) -> None:
    """Refuse a pretraining batch whose data and emulator activations alone would not fit in the
    memory the device has free: ``batch_size`` networks' weights, ``rollouts_per_network`` stored
    sequences each, and the emulator's activations over them (an estimate, made before any work)."""
    pre = config.pretrain
    rollouts = max(pre.rollouts_per_network, pre.eval_rollouts)  # evaluation reads more, keeps no activations
    steps, trained_steps = rollouts * context.sequence_length, pre.rollouts_per_network * context.sequence_length
    per_network = (context.layout.num_params + steps * (context.input_size + context.output_size)
                   + trained_steps * pre.emulator_hidden * pre.emulator_layers * EMULATOR_VALUES_PER_UNIT)
    need = pre.batch_size * per_network * 4
    have = available_memory(config.device)
    if have is not None and need > have:
        raise WspaceError(
            f"a pretraining batch of {pre.batch_size:,} networks x {rollouts} rollouts of {context.sequence_length} "
            f"steps needs about {_gib(need)} on {config.device}, which has {_gib(have)} free; lower --batch-size "
            f"(or the preset's rollouts and emulator size)")


# ---- pretraining checkpoints and losses ----------------------------------------------------------

#: what a pretraining checkpoint holds (``best_state`` may be None)
CHECKPOINT_KEYS = ("encoder", "emulator", "optimizer", "rng", "step", "history", "stale_evals", "best_loss",
                   "best_step", "best_metrics", "best_state")


def restore_checkpoint(state, encoder, emulator, optimizer, path: Path) -> None:
    """Load a pretraining checkpoint into freshly built modules, refusing one of another encoder,
    other sizes or an older (partial) format with a message instead of a KeyError or size mismatch."""
    fix = f"delete {path} to restart this run's pretraining from step 0, or start a new run"
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise WspaceError(f"{path} is not a wspace pretraining checkpoint of this version (it lacks "
                          f"{', '.join(missing)}); {fix}")
    if not isinstance(state["step"], int) or isinstance(state["step"], bool) or state["step"] < 0:
        raise WspaceError(f"{path} records step {state['step']!r}, not a step count; {fix}")
    for name, module in (("encoder", encoder), ("emulator", emulator)):
        try:
            module.load_state_dict(state[name])
        except (RuntimeError, ValueError, TypeError, AttributeError, KeyError) as err:
            raise WspaceError(f"{path}: the stored {name} weights do not fit this run's {name} "
                              f"({' '.join(str(err).split())[:240]}); the checkpoint is from another encoder, other "
                              f"sizes or another wspace; {fix}") from None
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, TypeError, AttributeError, KeyError, IndexError) as err:
        raise WspaceError(f"{path}: the stored optimiser state does not fit this run ({' '.join(str(err).split())[:240]}); "
                          f"{fix}") from None


def check_finite_loss(value: float, step: int, config) -> None:
    """Stop a diverged pretraining with what to change, instead of training on NaN."""
    if not math.isfinite(value):
        raise WspaceError(f"pretraining diverged: the emulation loss is {value} at step {step} (learning rate "
                          f"{config.lr:g}); start a new run with a lower --lr (the presets use 1e-3 and 1e-4)")


# ---- files --------------------------------------------------------------------------------------

def check_writable_dir(path: str | os.PathLike, flag: str) -> None:
    """``path`` (created if missing) is a folder this process can write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WspaceError(f"{flag} {path} is a file, not a folder; pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".wspace-write-check-"):
            pass
    except OSError as err:
        raise WspaceError(f"cannot write in {flag} {path} ({os_reason(err)}); pass a folder you can "
                          f"write to") from None


#: errors of a full or unwritable filesystem: told to the user, never a traceback
FILESYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def os_reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def filesystem_message(err: OSError) -> str | None:
    """The user's message for a write that failed because the disk is full or not writable
    (None for other OS errors, which stay bugs)."""
    if err.errno not in FILESYSTEM_ERRNOS:
        return None
    where = err.filename or "a file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"cannot write {where}: {os_reason(err)}; free some space (or pass another --out-dir / --out) "
                f"and run the same command again. What was written before is intact (files are written to "
                f"a temporary name and renamed)")
    return (f"cannot use {where}: {os_reason(err)}; make it writable (and readable), or pass a folder you can "
            f"write to (--out-dir / --out)")


# ---- a whole run ----------------------------------------------------------------------------------

def encoder_context_for(config, zoo=None):
    """The EncoderContext a run of ``config`` will give its encoder, worked out from the zoo
    settings (no zoo is built or opened, unless ``config.zoo_path`` names an existing one)."""
    from wspace_core import plugins
    from wspace_core.encoder import EncoderContext
    from wspace.training.pretrain import encoder_context

    if zoo is None and config.zoo_path:
        from wspace.zoo.store import Zoo

        zoo = Zoo.open(config.zoo_path, expect_arch=config.arch, verify=False)  # checksums: when the run opens it
    if zoo is not None:
        return encoder_context(zoo, config.encoder.z_dim, config.preset, config.encoder.options)
    from wspace.experiment.zoos import zoo_config_for
    from wspace.zoo.build import architecture_for

    zoo_config = zoo_config_for(config)
    task = plugins.task_families().get(config.task)(**zoo_config.task_settings)
    arch = architecture_for(zoo_config, task)
    return EncoderContext(layout=arch.layout, symmetry=arch.symmetry, sizes=arch.sizes,
                          input_size=task.input_size, output_size=task.output_size,
                          input_kind=task.input_kind, output_kind=task.output_kind,
                          sequence_length=task.sequence_length, z_dim=config.encoder.z_dim, preset=config.preset,
                          options=dict(config.encoder.options))


def check_run(config, encoders: dict[str, dict] | None = None, zoo=None) -> None:
    """Everything about a run that can be checked before work starts: plugin names, the device,
    the selection metric, the zoo settings (by working out the zoo's configuration), that each encoder (``encoders``:
    name -> its options; default the run's encoder) can be built with its options and fits in
    memory, that a pretraining batch fits, and the output folder. Seeds are checked where the
    configuration is made (``RunConfig``)."""
    import attrs

    from wspace_core import plugins
    from wspace.config import require_device

    require_device(config.device)
    plugins.architectures().get(config.arch)
    plugins.task_families().get(config.task)
    plugins.objectives().get(config.pretrain.objective)
    from wspace.training.pretrain import check_selection_metric

    check_selection_metric(config.pretrain)
    encoders = {config.encoder.name: config.encoder.options} if encoders is None else encoders
    for name in encoders:
        plugins.encoders().get(name)
    for options in encoders.values():
        strategy = options.get("probing_strategy")
        if isinstance(strategy, str):
            plugins.probing_strategies().get(strategy)
    context = encoder_context_for(config, zoo)
    for name, options in encoders.items():
        check_encoder_fits(name, attrs.evolve(context, options=dict(options)), config.device)
    check_batch_fits(config, context)
    check_writable_dir(config.out_dir, "--out-dir")  # last: it creates the folder
