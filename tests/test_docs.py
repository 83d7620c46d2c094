"""Meta-tests that keep the docs and the extension surface honest: every page exists, the CLI
reference is regenerated from the real CLI, every hook is documented with its signature and
tested, links and module paths in the docs point at real files, and every `wspace ...` command
line in the docs names real commands and options."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shlex
import types
from pathlib import Path

import click
import pytest

from wspace_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("architecture.md", "writing-a-plugin.md", "probing-strategies.md", "zoo-format.md", "cli.md",
         "reproducing-the-paper.md")
#: the pages that must give each hook's exact signature
HOOK_PAGES = ("writing-a-plugin.md", "architecture.md")

LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PATH_RE = re.compile(r"`((?:wspace_core|plugins|examples|tests|docs|benchmarks)/[A-Za-z0-9_./-]*)`")
FENCE_RE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.S | re.M)
INLINE_CODE_RE = re.compile(r"`([^`\n]+)`")


def _gen_cli():
    spec = importlib.util.spec_from_file_location("wspace_docs_gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def hook_signatures(module: types.ModuleType) -> dict[str, str]:
    """name -> `name(arg, ...)` of every hook spec in ``module``."""
    return {name: f"{name}{inspect.signature(func)}".replace(" ", "")
            for name, func in vars(module).items()
            if callable(func) and hasattr(func, "wspace_spec")}


def undocumented(signatures: dict[str, str], texts: list[str]) -> list[str]:
    squashed = [t.replace(" ", "") for t in texts]
    return sorted(sig for sig in signatures.values() if not any(sig in t for t in squashed))


def untested(names: list[str], texts: list[str]) -> list[str]:
    return sorted(n for n in names if not any(re.search(rf"\b{n}\b", t) for t in texts))


# -- pages ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PAGES)
def test_page_exists_and_has_a_title(name):
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    assert _page(name).startswith("# "), f"docs/{name} should start with a '# ' title"


def test_cli_reference_is_current():
    expected = _gen_cli().render()
    actual = (DOCS / "cli.md").read_text(encoding="utf-8") if (DOCS / "cli.md").exists() else ""
    assert actual == expected, "docs/cli.md is stale: run `python docs/gen_cli.py` to regenerate it"


def test_cli_reference_has_every_command():
    from wspace.cli import cli

    text = _page("cli.md")
    paths = []

    def walk(command, path):
        paths.append(path)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "wspace")
    missing = [p for p in paths if f"## `{p}`" not in text]
    assert not missing, f"docs/cli.md lacks {missing}: run `python docs/gen_cli.py`"


# -- hooks: documented and tested ------------------------------------------------------------------

def test_every_hook_is_documented_with_its_signature():
    signatures = hook_signatures(hookspecs)
    assert signatures, "no hook specs found in wspace_core/hookspecs.py"
    missing = undocumented(signatures, [_page(p) for p in HOOK_PAGES])
    assert not missing, (f"hook(s) {missing} are not documented: give each exact signature in "
                         f"docs/writing-a-plugin.md or docs/architecture.md")


def test_every_hook_has_a_test():
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "tests").glob("test_*.py"))
             if p.name != Path(__file__).name]
    missing = untested(list(hook_signatures(hookspecs)), texts)
    assert not missing, f"hook(s) {missing} appear in no tests/test_*.py: write a test that uses each"


def test_meta_checks_catch_a_new_hook():
    """The two checks above fail for a hook nobody documented or tested."""
    fake = types.ModuleType("fake_hookspecs")

    @hookspecs.hookspec
    def register_widgets(register, extra):
        """Register widgets."""

    fake.register_widgets = register_widgets
    signatures = hook_signatures(fake)
    assert signatures == {"register_widgets": "register_widgets(register,extra)"}
    assert undocumented(signatures, ["`register_widgets(register)`"]) == ["register_widgets(register,extra)"]
    assert undocumented(signatures, ["`register_widgets(register, extra)`"]) == []
    assert untested(["register_widgets"], ["register_widgets_v2 = 1"]) == ["register_widgets"]
    assert untested(["register_widgets"], ["def register_widgets(register):"]) == []


# -- links, paths and command lines in the docs --------------------------------------------------

def _all_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _prose(text: str) -> str:
    """The page without code blocks and inline code (where brackets are not links)."""
    return INLINE_CODE_RE.sub("", FENCE_RE.sub("", text))


def test_relative_links_resolve():
    broken = []
    for page in _all_pages():
        for target in LINK_RE.findall(_prose(page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http(s), mailto, in-page anchors
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.name}: {target}")
    assert not broken, f"broken relative links: {broken}"


def test_module_paths_in_docs_exist():
    missing = []
    for page in _all_pages():
        for path in PATH_RE.findall(page.read_text(encoding="utf-8")):
            path = path.rstrip(".")
            if "*" not in path and not (ROOT / path).exists():
                missing.append(f"{page.name}: {path}")
    assert not missing, f"the docs name paths that do not exist: {missing}"


def _command_lines(text: str) -> list[str]:
    """Every `wspace ...` invocation in shell code blocks and inline code of a page."""
    lines = []
    for lang, body in FENCE_RE.findall(text):
        if lang not in ("bash", "sh", "shell", "console", ""):
            continue
        body = re.sub(r"\\\n\s*", " ", body)
        lines += body.splitlines()
    lines += INLINE_CODE_RE.findall(text)
    out = []
    for line in lines:
        line = line.strip().removeprefix("$ ")
        for segment in re.split(r"&&|\|\||;|\|", line.split(" #", 1)[0]):
            try:
                words = shlex.split(segment)
            except ValueError:
                continue
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words = words[1:]  # VAR=value prefixes
            if words and words[0] == "wspace":
                out.append(words)
    return out


def _check_command(words: list[str]) -> str | None:
    from wspace.cli import cli

    command, ctx, i = cli, click.Context(cli, info_name="wspace"), 1
    while isinstance(command, click.Group) and i < len(words) and not words[i].startswith("-"):
        sub = command.get_command(ctx, words[i])
        if sub is None:
            if words[i] in ("...", "…"):
                return None
            return f"{' '.join(words[:i + 1])}: no such command"
        command, ctx, i = sub, click.Context(sub, info_name=words[i], parent=ctx), i + 1
    known = {"--help"} | {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in words[i:]:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            return f"{' '.join(words)}: {ctx.command_path} has no option {flag}"
    return None


def test_command_lines_in_docs_use_real_commands_and_options():
    problems = []
    for page in _all_pages():
        if page.name == "cli.md":
            continue  # generated from the CLI itself
        for words in _command_lines(page.read_text(encoding="utf-8")):
            problem = _check_command(words)
            if problem:
                problems.append(f"{page.name}: {problem}")
    assert not problems, "the docs show command lines the CLI does not accept:\n" + "\n".join(problems)


def test_command_line_check_catches_mistakes():
    assert _check_command(["wspace", "zoo", "info", "x"]) is None
    assert _check_command(["wspace", "zoo", "bild"]) is not None
    assert _check_command(["wspace", "zoo", "build", "--no-such-flag"]) is not None
