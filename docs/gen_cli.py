"""Generate docs/cli.md from the real CLI: the --help text of every `wspace` command.

    python docs/gen_cli.py            # rewrite docs/cli.md
    python docs/gen_cli.py --check    # exit 1 if docs/cli.md is stale

tests/test_docs.py regenerates the page in memory and fails when the file differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

CLI_MD = Path(__file__).resolve().parent / "cli.md"
#: fixed help width, so the page does not depend on the terminal it is generated in
WIDTH = 100

HEADER = """# CLI reference

Generated from the real command line by `python docs/gen_cli.py`; do not edit by hand
(`tests/test_docs.py` fails when this page is stale). One section per command, each with
its `--help` text.
"""


def _walk(command: click.Command, ctx: click.Context):
    """(context, command) of ``command`` and every subcommand below it, depth first, sorted by name."""
    yield ctx, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))


def render() -> str:
    """The markdown of docs/cli.md, from the --help of every command of ``wspace.cli.cli``."""
    from wspace.cli import cli

    root = click.Context(cli, info_name="wspace", terminal_width=WIDTH, max_content_width=WIDTH)
    sections = [HEADER]
    for ctx, command in _walk(cli, root):
        help_text = command.get_help(ctx).rstrip()
        sections.append(f"## `{ctx.command_path}`\n\n```text\n{help_text}\n```\n")
    return "\n".join(sections)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not CLI_MD.exists() or CLI_MD.read_text(encoding="utf-8") != text:
            print(f"{CLI_MD} is stale: run `python docs/gen_cli.py`", file=sys.stderr)
            return 1
        return 0
    CLI_MD.write_text(text, encoding="utf-8")
    print(f"wrote {CLI_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
