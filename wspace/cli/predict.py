"""`wspace predict`: property prediction from a pretrained encoder's frozen z."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import click

from wspace_core.registry import WspaceError


def _checkpoint_path(ref: str, tracking_uri: str | None) -> Path:
    """A run directory, an encoder.pt file, or an MLflow run id -> the encoder checkpoint."""
    from wspace.experiment.encoder_file import ENCODER_FILE

    path = Path(ref)
    if path.is_dir():
        path = path / ENCODER_FILE
    if path.is_file():
        return path
    if path.suffix or "/" in ref:
        raise WspaceError(f"no encoder checkpoint at {ref}; pass a run directory, its {ENCODER_FILE}, or an MLflow "
                          f"run id")
    from wspace.tracking import Tracker

    return Tracker(tracking_uri).download_artifact(ref, ENCODER_FILE)


def _out_dir_of(checkpoint: Path) -> Path | None:
    """OUT_DIR of a checkpoint inside OUT_DIR/runs/... (the run's own output folder), else None."""
    for parent in checkpoint.resolve().parents:
        if parent.name == "runs":
            return parent.parent
    return None


def find_zoo(config, fingerprint: str | None, checkpoint: Path, zoo_path: str | None):
    """The zoo a run learned from, opened read-only: the one given (``--zoo``), else the zoo with
    the fingerprint the checkpoint records, looked for under OUT_DIR/zoos of the output folder the
    run directory sits in (then of the stored configuration's, and its ``zoo_path``). Never builds
    one: a checkpoint is data, and where it points is only looked at."""
    import attrs

    from wspace.experiment.zoos import zoo_path_for
    from wspace.zoo.store import Zoo

    recorded = f" with fingerprint {fingerprint}" if fingerprint else ""
    if zoo_path is not None:
        zoo = Zoo.open(zoo_path, expect_arch=config.arch)
        if fingerprint and zoo.fingerprint != fingerprint:
            raise WspaceError(f"zoo {zoo_path} has fingerprint {zoo.fingerprint}, but {checkpoint} was trained on "
                              f"the zoo with fingerprint {fingerprint}; pass that zoo to --zoo")
        return zoo
    out_dirs = [d for d in (_out_dir_of(checkpoint), Path(config.out_dir)) if d is not None]
    candidates = [Path(config.zoo_path)] if config.zoo_path else []
    for out_dir in out_dirs:
        if fingerprint is None:  # an older checkpoint: the zoo of the run's settings
            candidates.append(zoo_path_for(attrs.evolve(config, out_dir=str(out_dir))))
        elif (out_dir / "zoos").is_dir():
            candidates.extend(sorted((out_dir / "zoos").iterdir()))
    for path in dict.fromkeys(candidates):  # in order, once each
        if fingerprint is not None and _recorded_fingerprint(path) != fingerprint:
            continue
        if (path / "manifest.json").is_file():
            return Zoo.open(path, expect_arch=config.arch)  # checked in full; the fingerprint is re-read
    looked = [str(config.zoo_path)] if config.zoo_path else []
    looked += [str(d / "zoos") for d in out_dirs]
    raise WspaceError(f"{checkpoint} was trained on a zoo{recorded} that is not in {' or '.join(looked)}; pass "
                      f"that zoo with --zoo PATH (`wspace predict` never builds a zoo)")


def _recorded_fingerprint(zoo_dir: Path) -> str | None:
    """The fingerprint a zoo's manifest states (None when there is no readable one)."""
    try:
        return json.loads((zoo_dir / "manifest.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def load_pretrained(ref: str, tracking_uri: str | None = None, echo=print, zoo_path: str | None = None,
                    device: str = "cpu"):
    """(config, zoo, encoder) of a finished `wspace run`, on ``device``. The checkpoint's stored
    configuration says which encoder and zoo; it is checked like a configuration file, and the
    zoo is looked for, never built (see ``find_zoo``). The configuration's encoder options are
    the stored encoder's settings where the checkpoint has them (the supervised baseline then
    trains the same encoder, whatever the preset says today)."""
    from wspace.config import require_device
    from wspace.experiment.encoder_file import read_encoder, restore_encoder

    require_device(device)
    path = _checkpoint_path(ref, tracking_uri)
    stored = read_encoder(path, device)
    zoo = find_zoo(stored.config, stored.zoo_fingerprint, path, zoo_path)
    echo(f"using zoo {zoo.path}")
    config = attrs.evolve(stored.config, encoder=attrs.evolve(stored.config.encoder, options=stored.options))
    return config, zoo, restore_encoder(stored, zoo)


@click.command(name="predict")
@click.option("--run", "run_ref", required=True, metavar="RUN_ID_OR_CHECKPOINT",
              help="A `wspace run` directory, its encoder.pt, or its MLflow run id.")
@click.option("--property", "properties", multiple=True,
              help="Property to predict (repeatable; default: every property the task family declares).")
@click.option("--supervised", is_flag=True, help="Also train the supervised baseline (same encoder, end to end).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI, to find a run by id.")
@click.option("--zoo", "zoo_path", type=click.Path(file_okay=False), default=None,
              help="The zoo the run learned from (default: found by the fingerprint its checkpoint records, "
                   "in the output folder of the run directory). A zoo is never built.")
@click.option("--device", default="cpu", show_default=True, help="torch device to predict on.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def predict_command(run_ref, properties, supervised, tracking_uri, zoo_path, device, as_json):
    """Train predictor heads on a pretrained encoder's frozen z and report validation and OOD-half figures."""
    from wspace.evaluation.downstream import headline, predict_frozen, predict_supervised, properties_of

    config, zoo, encoder = load_pretrained(run_ref, tracking_uri, echo=lambda m: click.echo(m, err=True),
                                           zoo_path=zoo_path, device=device)
    specs = properties_of(zoo, properties)
    dcfg = config.downstream
    results = {"frozen": predict_frozen(encoder, zoo, specs, dcfg, seed=config.seed, device=config.device)}
    if supervised:
        results["supervised"] = {
            spec.name: predict_supervised(config.encoder.name, zoo, spec, dcfg, z_dim=config.encoder.z_dim, preset=config.preset,
                                          encoder_options=config.encoder.options, seed=config.seed,
                                          device=config.device)
            for spec in specs}
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"{config.encoder.name} on {config.task}: property prediction (validation / ood half)")
    for setting, props in results.items():
        for prop, splits in props.items():
            key, _ = headline(splits["validation"])
            click.echo(f"  {setting:10s} {prop:22s} {key:15s} {splits['validation'][key]:8.4f} / {splits['ood'][key]:8.4f}")


def attach(cli: click.Group) -> None:
    cli.add_command(predict_command)
