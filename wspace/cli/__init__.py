"""The ``wspace`` command line: thin commands grouped by noun, each calling the library."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import warnings

import click

from wspace_core import __version__, plugins
from wspace_core.registry import WspaceError


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's stop, torchrun ending the other ranks) stops a command
    the way Ctrl-C does: committed chunks stay, pretraining checkpoints, MLflow marks the run
    KILLED, worker processes are stopped."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises ``Terminated`` in the main thread while a command runs (when nothing else
    has claimed the signal); the previous handler is restored afterwards."""
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    if install:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


class WspaceGroup(click.Group):
    """Turns every ``WspaceError`` (a user mistake) into a one-paragraph message and exit code 1;
    SIGTERM stops a command as Ctrl-C does."""

    def invoke(self, ctx):
        finished = False
        try:
            with warnings.catch_warnings(), _sigterm_as_interrupt():
                # a stale zoo lock taken over is also logged: say it once, without a source line
                warnings.filterwarnings("ignore", message="taking over the ", category=UserWarning)
                result = super().invoke(ctx)
            finished = True
            return result
        except WspaceError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:  # a full disk or a read-only folder met mid-work: said, not a traceback
            from wspace.validation import filesystem_message

            message = filesystem_message(err)
            if message is None:
                raise
            raise click.ClickException(message) from None
        finally:  # under torchrun: every rank leaves the process group before the interpreter ends
            if "wspace.training.distributed" in sys.modules:  # (commands that never joined import no torch)
                sys.modules["wspace.training.distributed"].teardown(finished=finished)


@click.group(cls=WspaceGroup)
@click.version_option(__version__, prog_name="wspace")
def cli():
    """wspace: learn representations of recurrent-network weights.

    Build a zoo of trained networks, pretrain an encoder by emulation, predict properties:
    `wspace run --arch lstm --task formal_languages --encoder interactive_probing`.
    """


@cli.command(name="plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the plugins bundled with wspace.")
def plugins_command(show_all):
    """List installed plugins as JSON: name, version and the hooks each implements."""
    click.echo(json.dumps(plugins.plugin_info(include_bundled=show_all), indent=2))


LISTINGS = {
    "architectures": plugins.architectures,
    "tasks": plugins.task_families,
    "encoders": plugins.encoders,
    "probing-strategies": plugins.probing_strategies,
    "objectives": plugins.objectives,
    "heads": plugins.heads,
}


@cli.command(name="list")
@click.argument("kind", type=click.Choice(list(LISTINGS)))
def list_command(kind):
    """List what plugins registered of KIND: each name and the first line of its docstring."""
    registry = LISTINGS[kind]()
    for name in registry.names():
        doc = (registry.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:24s} {doc[0] if doc else ''}".rstrip())


def _register_subcommands() -> None:
    """Commands grouped by area, one module each (imported here, after ``cli`` exists)."""
    from wspace.cli import compare, predict, run, zoo

    for module in (zoo, run, predict, compare):
        module.attach(cli)


_register_subcommands()


def main():
    cli(prog_name="wspace")


if __name__ == "__main__":
    main()
