"""`wspace predict`: property prediction from a pretrained encoder's frozen z."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wspace_core.registry import WspaceError


def _checkpoint_path(ref: str, tracking_uri: str | None) -> Path:
    """A run directory, an encoder.pt file, or an MLflow run id -> the encoder checkpoint."""
    path = Path(ref)
    if path.is_dir():
        path = path / "encoder.pt"
    if path.is_file():
        return path
    if path.suffix or "/" in ref:
        raise WspaceError(f"no encoder checkpoint at {ref}; pass a run directory, its encoder.pt, or an MLflow run id")
    from wspace_core.tracking import Tracker

    return Tracker(tracking_uri).download_artifact(ref, "encoder.pt")


def load_pretrained(ref: str, tracking_uri: str | None = None, echo=print):
    """(config, zoo, encoder) of a finished `wspace run`."""
    import torch

    from wspace_core.pretrain import build_encoder, encoder_context, load_checkpoint
    from wspace_core.run import config_from_dict, ensure_zoo

    path = _checkpoint_path(ref, tracking_uri)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), str) or \
            not isinstance(state.get("encoder"), dict):
        raise WspaceError(f"{path} is not an encoder checkpoint of `wspace run` (it lacks the encoder weights "
                          f"or the run configuration); pass the run directory of a finished run")
    try:
        raw = json.loads(state["config"])
    except ValueError as err:
        raise WspaceError(f"{path}: the stored run configuration is damaged ({err})") from None
    config = config_from_dict(raw, f"{path} (its run configuration)")
    zoo = ensure_zoo(config, echo)
    encoder = build_encoder(config.encoder, encoder_context(zoo, config.z_dim, config.preset, config.encoder_options))
    try:
        encoder.load_state_dict(state["encoder"])
    except (RuntimeError, ValueError, TypeError) as err:
        raise WspaceError(f"{path}: the stored encoder weights do not fit a {config.encoder!r} encoder "
                          f"({str(err).splitlines()[0]}); the checkpoint is damaged or from another wspace") from None
    return config, zoo, encoder.to(torch.device(config.device))


@click.command(name="predict")
@click.option("--run", "run_ref", required=True, metavar="RUN_ID_OR_CHECKPOINT",
              help="A `wspace run` directory, its encoder.pt, or its MLflow run id.")
@click.option("--property", "properties", multiple=True,
              help="Property to predict (repeatable; default: every property the task family declares).")
@click.option("--supervised", is_flag=True, help="Also train the supervised baseline (same encoder, end to end).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI, to find a run by id.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def predict_command(run_ref, properties, supervised, tracking_uri, as_json):
    """Train predictor heads on a pretrained encoder's frozen z and report validation and OOD-half figures."""
    from wspace_core.downstream import DOWNSTREAM_PRESETS, headline, predict_frozen, predict_supervised, properties_of

    config, zoo, encoder = load_pretrained(run_ref, tracking_uri, echo=lambda m: click.echo(m, err=True))
    specs = properties_of(zoo, properties)
    dcfg = DOWNSTREAM_PRESETS[config.preset]
    results = {"frozen": predict_frozen(encoder, zoo, specs, dcfg, seed=config.seed, device=config.device)}
    if supervised:
        results["supervised"] = {
            spec.name: predict_supervised(config.encoder, zoo, spec, dcfg, z_dim=config.z_dim, preset=config.preset,
                                          encoder_options=config.encoder_options, seed=config.seed,
                                          device=config.device)
            for spec in specs}
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"{config.encoder} on {config.task}: property prediction (validation / ood half)")
    for setting, props in results.items():
        for prop, splits in props.items():
            key, _ = headline(splits["validation"])
            click.echo(f"  {setting:10s} {prop:22s} {key:15s} {splits['validation'][key]:8.4f} / {splits['ood'][key]:8.4f}")


def attach(cli: click.Group) -> None:
    cli.add_command(predict_command)
