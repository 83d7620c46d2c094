"""`wspace run`: the whole line (zoo, pretraining, evaluation, tracking) from flags, a TOML file
and a preset, flags winning."""

from __future__ import annotations

from pathlib import Path

import click

from wspace.cli.options import key_values
from wspace.cli.progress import ProgressLine
from wspace.config import BASELINE_SCHEDULES, LR_SCHEDULES, load_toml, resolve
from wspace_core.presets import PRESETS
from wspace_core.registry import WspaceError


def run_options(func):
    """Options shared by `wspace run` and `wspace compare`."""
    options = [
        click.option("--arch", default=None, help="Architecture plugin name (default: lstm)."),
        click.option("--task", default=None, help="Task family plugin name (default: formal_languages)."),
        click.option("--preset", type=click.Choice(PRESETS), default=None,
                     help="Scale: smoke (seconds, for tests), quick (default; minutes on a laptop CPU), paper."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="TOML file with run settings; flags given here win over it."),
        click.option("--seed", type=int, default=None, help="Seed of pretraining (default 0)."),
        click.option("--z-dim", type=int, default=None, help="Size of the representation z (default 16)."),
        click.option("--device", default=None, help="torch device, e.g. cpu or cuda (default cpu)."),
        click.option("--zoo", "zoo_path", type=click.Path(file_okay=False), default=None,
                     help="Learn from this existing zoo (built with `wspace zoo build` or imported) "
                          "instead of building the preset's; its architecture and task are used."),
        click.option("--zoo-models", type=int, default=None, help="Networks in the zoo (overrides the preset)."),
        click.option("--zoo-steps", type=int, default=None, help="Training steps of each zoo network."),
        click.option("--zoo-seed", type=int, default=None, help="Seed of the zoo build (default 0)."),
        click.option("--pretrain-steps", type=int, default=None, help="Pretraining steps at most."),
        click.option("--batch-size", type=int, default=None, help="Networks per pretraining step (default 64)."),
        click.option("--lr", type=float, default=None, help="Pretraining learning rate."),
        click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=None,
                     help="How the pretraining learning rate moves: constant (the published code) or cosine "
                          "(down to 0 at the last step; the quick preset's). [pretrain] warmup_steps adds a "
                          "linear warm-up."),
        click.option("--objective", default=None,
                     help="Emulation objective (see `wspace list objectives`; default total_variation, as "
                          "the paper's published code)."),
        click.option("--loss-positions", type=click.Choice(("all", "masked")), default=None,
                     help="Rollout steps the emulation loss averages over: all (default, the published code) "
                          "or masked (the task's mask; formal languages: up to the first EOS)."),
        click.option("--rollouts-per-network", type=int, default=None,
                     help="Stored rollouts of each network per pretraining step (default 1, the published code)."),
        click.option("--probing-strategy", default=None,
                     help="Probing strategy of a probing encoder (see `wspace list probing-strategies`)."),
        click.option("--encoder-option", "encoder_option", multiple=True, metavar="KEY=VALUE",
                     help="Encoder setting, repeatable (e.g. --encoder-option hidden=256)."),
        click.option("--task-setting", "task_setting", multiple=True, metavar="KEY=VALUE",
                     help="Task family setting, repeatable (e.g. --task-setting data_root=~/mnist)."),
        click.option("--out-dir", default=None, help="Where zoos, runs and checkpoints go (default ./wspace_runs)."),
        click.option("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)."),
        click.option("--no-tracking", is_flag=True, default=False, help="Do not log to MLflow."),
        click.option("--experiment", default=None, help="MLflow experiment name (default wspace)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_from_options(encoder: str | None, opts: dict):
    file_values = load_toml(opts["config_file"]) if opts.get("config_file") else {}
    encoder_options = key_values(opts.get("encoder_option", ()), "--encoder-option")
    if opts.get("probing_strategy"):
        encoder_options["probing_strategy"] = opts["probing_strategy"]
    zoo = {"num_models": opts.get("zoo_models"), "steps": opts.get("zoo_steps"), "seed": opts.get("zoo_seed"),
           "task_settings": key_values(opts.get("task_setting", ()), "--task-setting") or None}
    arch, task = opts.get("arch"), opts.get("task")
    if opts.get("zoo_path"):  # the zoo says what it holds, unless the flags say otherwise
        from wspace.zoo.manifest import read_manifest

        manifest = read_manifest(Path(opts["zoo_path"]))
        arch = arch or manifest["architecture"]["name"]
        task = task or manifest["task"]["name"]
    flags = {
        "arch": arch, "task": task, "encoder": encoder, "zoo_path": opts.get("zoo_path"),
        "preset": opts.get("preset"), "seed": opts.get("seed"), "encoder.z_dim": opts.get("z_dim"),
        "device": opts.get("device"), "baseline": opts.get("baseline"), "out_dir": opts.get("out_dir"),
        "tracking_uri": opts.get("tracking_uri"), "experiment": opts.get("experiment"),
        "tracking": False if opts.get("no_tracking") else None,
        "zoo": zoo, "encoder.options": encoder_options or None,
        "pretrain.steps": opts.get("pretrain_steps"), "pretrain.batch_size": opts.get("batch_size"),
        "pretrain.lr": opts.get("lr"), "pretrain.lr_schedule": opts.get("lr_schedule"),
        "pretrain.objective": opts.get("objective"),
        "pretrain.loss_positions": opts.get("loss_positions"),
        "pretrain.rollouts_per_network": opts.get("rollouts_per_network"),
    }
    return resolve(file_values, **flags)


class Progress:
    """Progress callbacks for the zoo build and pretraining."""

    def __init__(self):
        self.zoo_line = self.pre_line = None

    def zoo(self, p):
        if self.zoo_line is None:
            self.zoo_line = ProgressLine("zoo build")
        self.zoo_line.update(p.model_steps_done, p.model_steps_total, "model-steps",
                             f" chunks {p.chunks_done}/{p.chunks_total}", elapsed=p.elapsed_s)
        if p.model_steps_done >= p.model_steps_total:
            self.zoo_line.close()
            self.zoo_line = None

    def pretrain(self, p):
        if self.pre_line is None:
            self.pre_line = ProgressLine("pretraining")
        extra = f" loss {p.loss:.4f}"
        if p.last_eval:
            extra += f" val {next(iter(p.last_eval['validation'].values())):.4f}"
        self.pre_line.update(p.step, p.total, "steps", extra, elapsed=p.elapsed_s)
        if p.step >= p.total:
            self.pre_line.close()
            self.pre_line = None

    def close(self):
        for line in (self.zoo_line, self.pre_line):
            if line is not None:
                line.close()
        self.zoo_line = self.pre_line = None


#: options that may accompany --resume: where to log, not what to compute
RESUME_OPTIONS = ("tracking_uri", "no_tracking")


def check_plugins(config) -> None:
    """Unknown plugin names, a device this machine lacks, bad seeds, an unwritable --out-dir and
    an encoder too large for the machine fail before any work is done."""
    from wspace.validation import check_run

    check_run(config)


@click.command(name="run")
@click.option("--encoder", default=None,
              help="Encoder plugin name (default interactive_probing; see `wspace list encoders`).")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              type=click.Path(exists=True, file_okay=False),
              help="Continue the interrupted run in RUN_DIR (the `run directory` it printed, under "
                   "OUT_DIR/runs/) with the configuration stored there: pretraining goes on from its "
                   "last checkpoint and logs to the same MLflow run. Only --tracking-uri and "
                   "--no-tracking may be given with it.")
@click.option("--baseline", type=click.Choice(BASELINE_SCHEDULES), default=None,
              help="When the no-information baseline trains: alongside the encoder, in a second "
                   "single-threaded process (default; on the CPU with 2+ torch threads, else before), "
                   "or before it.")
@run_options
def run_command(encoder, resume_dir, **opts):
    """Build (or reuse) a zoo, pretrain an encoder by emulation, evaluate it, log one MLflow run.

    With no flags: the quick preset of formal languages with the interactive probing encoder,
    a few minutes on a laptop CPU. Example:

    \b
        wspace run --arch lstm --task formal_languages --encoder interactive_probing

    Interrupted (Ctrl-C, a crash, a lost machine)? `wspace run --resume RUN_DIR` continues it;
    running the first command again reuses the zoo but starts pretraining afresh.
    """
    from wspace.experiment.run import interrupted_message, results_table, resume_config, resume_run, run

    progress = Progress()
    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    if resume_dir is not None:
        given = [name for name, value in [("encoder", encoder), *opts.items()]
                 if name not in RESUME_OPTIONS and value not in (None, False, ())]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise WspaceError(f"--resume continues {resume_dir} with the configuration stored in it; drop "
                              f"{flags} (to change the configuration, start a new run)")
        check_plugins(resume_config(resume_dir))
        call = lambda: resume_run(resume_dir, echo, progress.zoo, progress.pretrain,  # noqa: E731
                                  tracking_uri=opts.get("tracking_uri"),
                                  tracking=False if opts.get("no_tracking") else None)
    else:
        config = config_from_options(encoder, opts)
        check_plugins(config)
        call = lambda: run(config, echo=echo, zoo_progress=progress.zoo,  # noqa: E731
                           pretrain_progress=progress.pretrain)
    try:
        results = call()
    except KeyboardInterrupt as err:
        progress.close()
        click.echo(interrupted_message(getattr(err, "run_dir", resume_dir)), err=True)
        raise SystemExit(130)
    progress.close()
    from wspace.training import distributed

    if distributed.is_main():  # under torchrun every rank returns the results; one prints them
        click.echo(results_table(results))


def attach(cli: click.Group) -> None:
    cli.add_command(run_command)
