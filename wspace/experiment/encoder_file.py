"""``encoder.pt``: the pretrained encoder a run leaves in its run directory, and the one way it is
read back. It holds plain data only (loadable with ``weights_only=True``): the encoder's and the
emulator's weights, the encoder's name, the run configuration (its ``attrs.asdict`` as JSON), the
encoder's resolved settings (``Encoder.settings``, JSON) and the fingerprint of the zoo it
learned from. `wspace run` and every child run of `wspace compare`
write one; `wspace predict` reads it, trusting nothing in it (a checkpoint is data)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch

from wspace.config import RunConfig
from wspace.training.checkpoint import load_checkpoint
from wspace.training.pretrain import PretrainResult, build_encoder, encoder_context
from wspace.validation import check_encoder_fits
from wspace_core.encoder import Encoder
from wspace_core.registry import WspaceError

ENCODER_FILE = "encoder.pt"


def save_encoder(run_dir: Path, result: PretrainResult, config: RunConfig, zoo) -> Path:
    """Write ``run_dir/encoder.pt`` of ``result``, pretrained with ``config`` on ``zoo``; returns its path."""
    path = Path(run_dir) / ENCODER_FILE
    torch.save({"encoder": result.encoder.state_dict(), "emulator": result.emulator.state_dict(),
                "encoder_name": config.encoder.name, "config": json.dumps(attrs.asdict(config)),
                # the encoder as built: rebuilt from these, a preset changed later does not change it
                "encoder_settings": json.dumps(result.encoder.settings()),
                "zoo_fingerprint": zoo.fingerprint},  # what `wspace predict` finds the zoo by
               path)
    return path


@attrs.frozen
class StoredEncoder:
    """An ``encoder.pt`` as read and checked: its run configuration (on the device asked for), the
    encoder's weights, the fingerprint of its zoo (None in files older than the fingerprint) and
    the encoder's resolved settings (None in files older than them: the configuration's options
    at its preset then rebuild it)."""

    path: Path
    config: RunConfig
    weights: dict
    zoo_fingerprint: str | None
    settings: dict | None = None

    @property
    def options(self) -> dict:
        """The options that rebuild the stored encoder."""
        return self.config.encoder.options if self.settings is None else self.settings


def read_encoder(path: Path, device: str = "cpu") -> StoredEncoder:
    """Read ``path``, refusing with a clear error what is not an encoder file of `wspace run`; the
    stored configuration is checked like a configuration file."""
    from wspace.config import config_from_dict

    state = load_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), str) or \
            not isinstance(state.get("encoder"), dict):
        raise WspaceError(f"{path} is not an encoder checkpoint of `wspace run` (it lacks the encoder weights "
                          f"or the run configuration); pass the run directory of a finished run")
    fingerprint = state.get("zoo_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise WspaceError(f"{path} records a zoo fingerprint that is not a string; the checkpoint is damaged")
    try:
        raw = json.loads(state["config"])
    except ValueError as err:
        raise WspaceError(f"{path}: the stored run configuration is damaged ({err})") from None
    config = attrs.evolve(config_from_dict(raw, f"{path} (its run configuration)"), device=device)
    settings = None
    if "encoder_settings" in state:
        try:
            settings = json.loads(state["encoder_settings"])
        except (TypeError, ValueError) as err:
            raise WspaceError(f"{path}: the stored encoder settings are damaged ({err})") from None
        if not isinstance(settings, dict):
            raise WspaceError(f"{path}: the stored encoder settings are not a table of options; the checkpoint "
                              f"is damaged")
    return StoredEncoder(Path(path), config, state["encoder"], fingerprint, settings)


def restore_encoder(stored: StoredEncoder, zoo) -> Encoder:
    """The stored encoder, built for ``zoo`` and loaded with its weights, on the configuration's device."""
    config = stored.config
    context = encoder_context(zoo, config.encoder.z_dim, config.preset, stored.options)
    check_encoder_fits(config.encoder.name, context, config.device)  # the stored sizes are data too
    encoder = build_encoder(config.encoder.name, context)
    try:
        encoder.load_state_dict(stored.weights)
    except (RuntimeError, ValueError, TypeError) as err:
        raise WspaceError(f"{stored.path}: the stored encoder weights do not fit a {config.encoder.name!r} encoder "
                          f"({str(err).splitlines()[0]}); the checkpoint is damaged or from another wspace") from None
    return encoder.to(torch.device(config.device))
