"""`wspace zoo ...`: build, inspect, verify, import and merge zoos. Thin: parse, call the library."""

from __future__ import annotations

import functools
import json
import sys
import time

import click

from wspace_core.presets import PRESETS
from wspace_core.registry import WspaceError


@click.group(name="zoo")
def zoo():
    """Zoos: populations of trained networks on disk (weights, rollouts, metadata, splits).

    A zoo is a directory you can copy, archive and share: manifest.json plus .npy arrays.
    Start with `wspace zoo build --task formal_languages --preset smoke --out zoos/smoke`.
    """


def _filesystem_errors(command):
    """A filesystem failure the zoo layer did not already explain (it turns those it meets into
    ``ZooFileError``s) still ends in one message naming the path and the fix, not a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OSError as err:
            from wspace.zoo.files import os_error_message

            raise click.ClickException(os_error_message(err)) from None
    return wrapper


def _fmt_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


class BuildProgressBar:
    """Renders ``BuildProgress`` reports on stderr: percent, models done, models/s and ETA. The
    rate counts only this run's work, so a resumed build gets an honest ETA."""

    def __init__(self, num_models: int, interval: float = 0.5, width: int = 24):
        self.num_models = num_models
        self.interval, self.width = interval, width
        self.tty = sys.stderr.isatty()
        self._first: tuple[float, float] | None = None  # (models done, elapsed) at the first report
        self._last_draw = float("-inf")
        self._drawn = False
        self.last = None

    def __call__(self, p) -> None:
        self.last = p
        total = max(1, p.model_steps_total)
        models = self.num_models * p.model_steps_done / total
        if self._first is None:
            self._first = (models, p.elapsed_s)
        finished = p.model_steps_done >= p.model_steps_total
        now = time.monotonic()
        if not finished and now - self._last_draw < (self.interval if self.tty else 10.0):
            return
        self._last_draw = now
        done0, t0 = self._first
        rate = (models - done0) / (p.elapsed_s - t0) if p.elapsed_s > t0 else 0.0
        eta = (self.num_models - models) / rate if rate > 0 else float("nan")
        frac = p.model_steps_done / total
        bar = "#" * int(frac * self.width)
        line = (f"building [{bar:<{self.width}}] {100 * frac:5.1f}% {models:,.1f}/{self.num_models} models, "
                f"chunks {p.chunks_done}/{p.chunks_total}, {rate:,.2f} models/s, "
                f"elapsed {_fmt_seconds(p.elapsed_s)}, ETA {_fmt_seconds(eta)}")
        click.echo("\r" + line.ljust(110) if self.tty else line, err=True, nl=not self.tty)
        self._drawn = True

    def close(self) -> None:
        if self._drawn and self.tty:
            click.echo("", err=True)


@zoo.command(name="build")
@click.option("--arch", default="lstm", show_default=True, help="Architecture plugin (see `wspace list architectures`).")
@click.option("--task", required=True, help="Task family plugin (see `wspace list tasks`), e.g. formal_languages.")
@click.option("--preset", type=click.Choice(PRESETS), default="quick", show_default=True,
              help="Scale: smoke (seconds, for tests), quick (minutes on a laptop CPU), paper (the paper's zoo).")
@click.option("--seed", type=int, default=None, help="Seed of the whole build (default 0).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory of the zoo to write: new or empty (wspace marks it as a zoo), or the zoo to --resume.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build in --out where it stopped.")
@click.option("--num-models", type=int, default=None, help="Networks in the zoo (overrides the preset).")
@click.option("--chunk-size", type=int, default=None, help="Networks trained at once and committed together.")
@click.option("--steps", type=int, default=None, help="Training steps of each network (overrides the preset).")
@click.option("--device", default=None, help="torch device to train on, e.g. cpu or cuda.")
@click.option("--task-setting", "task_setting", multiple=True, metavar="KEY=VALUE",
              help="Task family setting, repeatable (e.g. --task-setting data_root=~/mnist).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file whose [zoo] table (the run configuration's) sets the zoo; flags given here win.")
@_filesystem_errors
def build_command(arch, task, preset, seed, out, resume, num_models, chunk_size, steps, device, task_setting,
                  config_file):
    """Train a zoo of networks and write it to --out, chunk by chunk.

    Ctrl-C (or SIGTERM) stops it without damage: committed chunks stay, and `--resume` continues
    from them; worker processes end with it, even when the build itself is killed outright.
    Under torchrun (`torchrun --nproc-per-node N -m wspace.cli zoo build ...`) each rank
    builds its share of the chunks into --out and rank 0 merges them (docs/scaling.md).
    """
    from wspace.training import distributed
    from wspace.zoo import build
    from wspace.cli.options import key_values
    from wspace.config import load_toml, require_device

    file_zoo = dict(load_toml(config_file).get("zoo", {})) if config_file else {}
    task_settings = {**file_zoo.pop("task_settings", {}), **key_values(task_setting, "--task-setting")}
    flags = {"arch": arch, "seed": seed, "num_models": num_models, "chunk_size": chunk_size,
             "steps": steps, "device": device, "task_settings": task_settings or None}
    if device is not None:
        require_device(device)  # before any work
    overrides = {**file_zoo, **{k: v for k, v in flags.items() if v is not None}}
    config = build.preset_config(task, preset, **overrides)
    ctx = distributed.launch_context()  # a torchrun launch with WORLD_SIZE > 1, or one process
    models = config.num_models
    if ctx.enabled:
        distributed.setup(config.device)
        models = distributed.shard_num_models(config.num_models, config.chunk_size, ctx)
        if ctx.is_main:
            click.echo(f"rank 0 of {ctx.world_size}: every rank builds its chunks into {out}, then rank 0 "
                       f"merges them; the progress shown is rank 0's share", err=True)
    bar = BuildProgressBar(models)
    try:
        result = distributed.build_zoo(config, out, resume=resume, progress=bar if ctx.is_main else None)
    except KeyboardInterrupt:
        bar.close()
        if ctx.is_main:
            click.echo(_interrupted_message(out, bar), err=True)
        raise click.exceptions.Exit(130) from None
    bar.close()
    if ctx.is_main:
        click.echo(f"zoo complete: {result.path} ({result.num_models} models, {result.num_rows} rows)")


def _interrupted_message(out: str, bar: BuildProgressBar) -> str:
    from wspace.zoo import zoo_info

    try:
        info = zoo_info(out)
        done, total = info["chunks"]["committed"], info["chunks"]["total"]
    except WspaceError:
        if bar.last is None:
            return "interrupted before the first chunk was committed; rerun with --resume to start again"
        done, total = bar.last.chunks_done, bar.last.chunks_total
    return f"interrupted: {done} of {total} chunks committed; rerun with --resume to finish"


@zoo.command(name="info")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_filesystem_errors
def info_command(path, as_json):
    """Show a zoo's status, sizes, splits and per-snapshot performance (also while it builds)."""
    from wspace.zoo import format_info, zoo_info

    info = zoo_info(path)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@zoo.command(name="verify")
@click.argument("path", type=click.Path(file_okay=False))
@_filesystem_errors
def verify_command(path):
    """Check every file of a complete zoo against its manifest (sizes, headers, sha256)."""
    from wspace.zoo import Zoo

    from wspace.zoo.manifest import has_checksum

    opened = Zoo.open(path, verify=True)
    click.echo(f"ok: {opened.path} ({len(opened.manifest['arrays'])} files, {opened.num_rows} rows) "
               f"matches its manifest")
    if not has_checksum(opened.manifest):
        click.echo("note: this manifest predates manifest checksums: its files and its fingerprinted settings "
                   "are checked, its column names, snapshot steps and counts are not covered by a checksum; "
                   "rebuilding or re-importing the zoo seals them", err=True)


@zoo.command(name="import-paper")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--task", default=None,
              help="Task family of the published zoo in SRC: a registered family that reads published "
                   "files (formal_languages, tiled_mnist; default: read from its files).")
@click.option("--arch", default="lstm", show_default=True, help="Architecture plugin of the stored weights.")
@click.option("--hidden-size", type=int, default=None, help="Hidden size (inferred from the weights if unique).")
@click.option("--num-layers", type=int, default=None, help="Recurrent layers (inferred if unique).")
@click.option("--chunk-size", type=int, default=64, show_default=True, help="Networks per committed chunk.")
@click.option("--check", type=click.Choice(["all", "sample", "none"]), default="all", show_default=True,
              help="Recompute the stored outputs from the stored weights: all rollouts, 8 per row, or skip.")
@click.option("--resume", is_flag=True, help="Continue an interrupted import into PATH.")
@_filesystem_errors
def import_paper_command(src, path, task, arch, hidden_size, num_layers, chunk_size, check, resume):
    """Import a published zoo of the paper (folder SRC with parameters.npy, sequences.npy,
    logits.npy, tasks.npy, ...) into a wspace zoo at PATH."""
    from pathlib import Path

    from wspace.zoo import import_paper
    from wspace.zoo.directory import check_claimable
    from wspace.zoo.manifest import MANIFEST_NAME

    check_claimable(Path(path), MANIFEST_NAME)  # before the (long) check of the published outputs
    result = import_paper(src, path, task, arch=arch, hidden_size=hidden_size, num_layers=num_layers,
                          chunk_size=chunk_size, check=check, resume=resume)
    click.echo(f"imported {result.num_models} networks ({result.num_rows} rows) into {result.path}")


@zoo.command(name="merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory of the merged zoo (may be one of the sources).")
@_filesystem_errors
def merge_command(sources, out):
    """Merge the shards of one build (one per machine, say) into one complete zoo at --out."""
    from wspace.zoo import merge_zoos

    result = merge_zoos(list(sources), out)
    click.echo(f"merged {len(sources)} shard(s) into {result.path} ({result.num_models} models)")


def attach(cli: click.Group) -> None:
    """Add the `zoo` command group to the main `wspace` group."""
    cli.add_command(zoo)
