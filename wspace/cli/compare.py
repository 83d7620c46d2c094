"""`wspace compare`: every encoder and the no-information baseline over several seeds on one zoo,
one parent MLflow run with a child run each, and a report directory (report.md, results.json,
plots)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from wspace.cli.run import Progress, config_from_options, run_options
from wspace.presets import COMPARE_SEEDS


class _RecordingCommand(click.Command):
    """Keeps the arguments as given, so report.md can show the exact command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["wspace.argv"] = list(args)
        return super().parse_args(ctx, args)


def _command_line(ctx: click.Context) -> str:
    return shlex.join(["wspace", ctx.info_name or "compare", *ctx.meta.get("wspace.argv", [])])


@click.command(name="compare", cls=_RecordingCommand)
@click.option("--encoders", "encoders_spec", default="all", show_default=True,
              help="Comma-separated encoder names, or 'all': every registered encoder except the "
                   "no_information baseline, which always runs.")
@click.option("--seeds", "seeds_spec", default=None,
              help="Number of pretraining seeds (--seed, --seed+1, ...), or a comma list of seeds "
                   f"(default: {COMPARE_SEEDS['paper']}, the paper's, with --preset paper; {COMPARE_SEEDS['quick']} otherwise).")
@click.option("--out", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Report directory (default: <out-dir>/reports/<time>-compare-<task>).")
@click.option("--skip-supervised", is_flag=True, default=False,
              help="Skip the supervised baseline (each encoder trained end to end per property).")
@click.option("--probe-networks", type=int, default=4, show_default=True,
              help="Validation networks whose probing inputs are plotted (probing encoders).")
@click.option("--permutation-networks", type=int, default=32, show_default=True,
              help="Networks in the hidden-neuron permutation table.")
@click.option("--workers", type=int, default=None,
              help="Child runs trained at once, each in a single-threaded worker process (default: one "
                   "per CPU core, at most 8; 1 on a GPU). 1: one after another in this process.")
@run_options
@click.pass_context
def compare_command(ctx, encoders_spec, seeds_spec, report_dir, skip_supervised, probe_networks,
                    permutation_networks, workers, **opts):
    """Compare encoders as the paper does: emulation losses (Table 2), property prediction
    pretrained vs supervised (Fig. 8), emulation fidelity (Fig. 5), embeddings (Fig. 6/7),
    probing inputs (Fig. 15) and hidden-neuron permutations (Fig. 16/17), over several seeds.

    Takes the flags of `wspace run`. --encoder-option KEY=VALUE goes to every encoder,
    ENCODER.KEY=VALUE to that one. Example:

    \b
        wspace compare --arch lstm --task formal_languages --encoders all --seeds 3 --out report
        wspace compare --preset paper --task formal_languages --device cuda --out paper-report
    """
    from wspace.experiment.compare import CompareConfig, compare, encoder_options_for, parse_encoders, parse_seeds
    from wspace.reporting.markdown import paper_table2
    from wspace.reporting.roles import baseline_encoder
    from wspace.validation import check_run, check_writable_dir

    if workers is not None and workers < 1:
        raise click.BadParameter(f"must be at least 1 (1: the runs one after another in this process), got {workers}",
                                 param_hint="--workers")
    config = config_from_options(None, opts)
    encoders = parse_encoders(encoders_spec)
    if seeds_spec is None:
        seeds_spec = COMPARE_SEEDS[config.preset]
    seeds = parse_seeds(seeds_spec, config.seed)
    # unknown names, the device, sizes and where the report goes fail before any work
    check_run(config, {name: encoder_options_for(name, config.encoder.options) for name in (baseline_encoder(), *encoders)})
    if report_dir is None:
        report_dir = str(Path(config.out_dir) / "reports" / f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{config.task}")
    check_writable_dir(report_dir, "--out")
    compare_config = CompareConfig(run=config, encoders=encoders, seeds=seeds, report_dir=report_dir,
                                   skip_supervised=skip_supervised, probe_networks=probe_networks,
                                   permutation_networks=permutation_networks, command=_command_line(ctx),
                                   workers=workers)
    progress = Progress()
    try:
        results = compare(compare_config, echo=lambda m: click.echo(m, err=True), zoo_progress=progress.zoo,
                          pretrain_progress=progress.pretrain)
    except KeyboardInterrupt:
        progress.close()
        click.echo("interrupted: the MLflow parent run and a child run still open are marked KILLED (runs "
                   "training in worker processes are stopped, not logged); the zoo "
                   "keeps every committed chunk and runs.json the finished runs; run the same command "
                   "again to start the comparison over", err=True)
        raise SystemExit(130)
    progress.close()
    click.echo("\n".join(paper_table2(results)))  # Table 2 in the paper's form; every metric is in report.md
    click.echo(results["ordering"]["text"].replace("**", ""))
    click.echo(f"report: {Path(report_dir) / 'report.md'}")
    if results["mlflow"]["parent_run_id"]:
        click.echo(f"MLflow parent run {results['mlflow']['parent_run_id']}: {results['mlflow']['tracking']}")


def attach(cli: click.Group) -> None:
    cli.add_command(compare_command)
