"""The plugin system: registration, discovery, errors, and the CLI listings."""

import importlib.metadata
import json
import subprocess
import sys
import types

import pytest
from click.testing import CliRunner

from wspace_core import plugins
from wspace_core.architecture import Architecture
from wspace.cli import cli
from wspace_core.hookspecs import hookimpl
from wspace_core.registry import DuplicateNameError, UnknownNameError


class TinyArch(Architecture):
    """A test-only architecture."""

    name = "tiny"


def test_bundled_plugins_register_lstm():
    assert "lstm" in plugins.architectures()
    assert plugins.architectures().owner("lstm") == "wspace_lstm"


def test_temporary_plugin_registers_and_unregisters(register_plugin, plugin_namespace):
    @hookimpl
    def register_architectures(register):
        register("tiny", TinyArch)

    plugin_namespace.register_architectures = register_architectures
    register_plugin(plugin_namespace, name="tiny-plugin")
    assert plugins.architectures().get("tiny") is TinyArch
    assert plugins.architectures().owner("tiny") == "tiny-plugin"


def test_temporary_plugin_is_gone_after_its_test():
    assert "tiny" not in plugins.architectures()


def test_unknown_name_lists_registered():
    with pytest.raises(UnknownNameError) as info:
        plugins.architectures().get("transformer-xl")
    message = str(info.value)
    assert "transformer-xl" in message and "lstm" in message
    assert "lstm" in info.value.available


def test_duplicate_name_names_both_plugins(register_plugin, plugin_namespace):
    @hookimpl
    def register_architectures(register):
        register("lstm", TinyArch)

    plugin_namespace.register_architectures = register_architectures
    register_plugin(plugin_namespace, name="copycat")
    with pytest.raises(DuplicateNameError) as info:
        plugins.architectures()
    assert "wspace_lstm" in str(info.value) and "copycat" in str(info.value)


def test_misspelled_hookimpl_fails_loudly(register_plugin):
    import pluggy

    bad = types.ModuleType("typo_plugin")

    @hookimpl
    def register_architecture(register):  # missing the final "s"
        register("x", TinyArch)

    bad.register_architecture = register_architecture
    with pytest.raises(pluggy.PluginValidationError, match="register_architecture"):
        register_plugin(bad, name="typo")
        plugins.architectures()


class _FakeEntryPoint:
    def __init__(self, name, module):
        self.name, self.group, self.value, self._module = name, "wspace", module.__name__, module

    def load(self):
        return self._module


class _FakeDist:
    def __init__(self, entry_points):
        self.entry_points = entry_points
        self.metadata = {"name": "wspace-fake-plugin"}
        self.version = "9.9.9"

    @property
    def name(self):
        return self.metadata["name"]

    @property
    def _normalized_name(self):
        return self.metadata["name"]


@pytest.fixture
def fake_installed_plugin(monkeypatch):
    """Pretends a distribution with a `wspace` entry point is installed; no install needed."""
    module = types.ModuleType("wspace_fake_installed")

    @hookimpl
    def register_architectures(register):
        register("fake-installed", TinyArch)

    module.register_architectures = register_architectures
    dist = _FakeDist([_FakeEntryPoint("fake", module)])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [dist])
    monkeypatch.setattr(plugins, "_loaded", False)
    yield module
    if plugins.pm.is_registered(module):
        plugins.pm.unregister(module)
    plugins.reset()


def test_entry_point_discovery(fake_installed_plugin, monkeypatch):
    monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV, raising=False)
    plugins.reset()
    assert plugins.architectures().get("fake-installed") is TinyArch
    info = {p["name"]: p for p in plugins.plugin_info()}
    assert info["fake"]["version"] == "9.9.9"
    assert info["fake"]["hooks"] == ["register_architectures"]
    assert "wspace_lstm" not in info  # bundled ones only with --all
    assert "wspace_lstm" in {p["name"] for p in plugins.plugin_info(include_bundled=True)}


def test_environment_variable_limits_installed_plugins(fake_installed_plugin, monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "")
    plugins.reset()
    assert "fake-installed" not in plugins.architectures()
    assert "lstm" in plugins.architectures()  # bundled plugins always load


def test_environment_variable_selects_by_name(fake_installed_plugin, monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "fake")
    plugins.reset()
    assert "fake-installed" in plugins.architectures()


def test_every_hook_has_a_docstring():
    from wspace_core import hookspecs

    for hook in plugins.HOOK_KINDS:
        assert getattr(hookspecs, hook).__doc__, hook


def test_cli_plugins_and_listings():
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "--all"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert any(p["name"] == "wspace_lstm" and "register_architectures" in p["hooks"] for p in listed)
    result = runner.invoke(cli, ["list", "architectures"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "Stacked LSTM" in lines["lstm"]
    for kind in ("tasks", "encoders", "probing-strategies", "objectives", "heads"):
        assert runner.invoke(cli, ["list", kind]).exit_code == 0
    result = runner.invoke(cli, ["list", "gizmos"])
    assert result.exit_code != 0 and "architectures" in result.output


def test_installed_console_script():
    """The real entry point, as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "wspace", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "wspace" in out.stdout
    import shutil

    exe = shutil.which("wspace")
    assert exe, "the wspace console script is not installed (pip install -e .)"
    out = subprocess.run([exe, "plugins", "--all"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "wspace_lstm" in out.stdout
    out = subprocess.run([exe, "list", "architectures"], capture_output=True, text=True)
    assert out.returncode == 0 and "lstm" in out.stdout


def test_third_party_objective_head_and_strategy_register(register_plugin, plugin_namespace):
    """Every kind of thing can come from an outside plugin through its hook."""
    from wspace_core.objective import Head, Objective
    from wspace_core.probing import ProbingStrategy

    class Hinge(Objective):
        """A test objective."""

    class Ordinal(Head):
        """A test head."""

        kinds = ("ordinal",)

    class Zeros(ProbingStrategy):
        """A test strategy."""

    @hookimpl
    def register_objectives(register):
        register("hinge", Hinge)

    @hookimpl
    def register_heads(register):
        register("ordinal", Ordinal)

    @hookimpl
    def register_probing_strategies(register):
        register("zeros", Zeros)

    @hookimpl
    def register_task_families(register):
        pass

    plugin_namespace.register_objectives = register_objectives
    plugin_namespace.register_heads = register_heads
    plugin_namespace.register_probing_strategies = register_probing_strategies
    plugin_namespace.register_task_families = register_task_families
    register_plugin(plugin_namespace, name="outside")
    assert plugins.objectives().get("hinge") is Hinge
    assert plugins.heads().get("ordinal") is Ordinal
    assert plugins.probing_strategies().get("zeros") is Zeros
    info = {p["name"]: p for p in plugins.plugin_info(include_bundled=True)}
    assert info["outside"]["hooks"] == ["register_heads", "register_objectives",
                                        "register_probing_strategies", "register_task_families"]
    result = CliRunner().invoke(cli, ["list", "objectives"])
    assert "hinge" in result.output and "A test objective." in result.output


def test_broken_installed_plugin_names_the_escape_hatch(monkeypatch):
    from wspace_core.registry import WspaceError

    class _Broken(_FakeEntryPoint):
        def load(self):
            raise ImportError("No module named 'numpyy'")

    dist = _FakeDist([_Broken("broken", types.ModuleType("wspace_broken"))])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [dist])
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV, raising=False)
    plugins.reset()
    with pytest.raises(WspaceError, match=r"'broken' failed to load.*WSPACE_LOAD_PLUGINS=''"):
        plugins.architectures()
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "")
    plugins.reset()
    assert "lstm" in plugins.architectures()


# ---- hostile or broken plugins (issue #11, items 11 and 12): named, with the way out ----------------

@pytest.mark.parametrize("item", [42, lambda context: None, "TinyArch", object],
                         ids=["int", "lambda", "string", "not-a-subclass"])
def test_registering_a_non_class_is_refused_at_registration(register_plugin, plugin_namespace, item):
    from wspace_core.registry import WspaceError

    @hookimpl
    def register_encoders(register):
        register("bogus", item)

    plugin_namespace.register_encoders = register_encoders
    register_plugin(plugin_namespace, name="sloppy-plugin")
    with pytest.raises(WspaceError, match=r"plugin 'sloppy-plugin' registered encoder 'bogus' as .*not a subclass "
                                          r"of wspace_core\.encoder\.Encoder.*WSPACE_LOAD_PLUGINS"):
        plugins.encoders()
    result = CliRunner().invoke(cli, ["list", "encoders"])  # not listed, then crashing when used
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "sloppy-plugin" in result.output and "bogus" in result.output


def test_exception_in_a_hook_names_the_plugin(register_plugin, plugin_namespace):
    from wspace_core.registry import WspaceError

    @hookimpl
    def register_objectives(register):
        raise ZeroDivisionError("division by zero in the plugin's own code")

    plugin_namespace.register_objectives = register_objectives
    register_plugin(plugin_namespace, name="buggy-plugin")
    with pytest.raises(WspaceError, match=r"plugin 'buggy-plugin' raised ZeroDivisionError in its "
                                          r"register_objectives hook \(division by zero.*WSPACE_LOAD_PLUGINS=''"):
        plugins.objectives()
    result = CliRunner().invoke(cli, ["run", "--preset", "smoke", "--no-tracking"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "buggy-plugin" in result.output


def test_load_plugins_variable_naming_no_installed_plugin(fake_installed_plugin, monkeypatch):
    from wspace_core.registry import WspaceError

    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "fake,fkae")
    plugins.reset()
    with pytest.raises(WspaceError, match=r"WSPACE_LOAD_PLUGINS names 'fkae', which no installed plugin is "
                                          r"called; installed plugins: fake\. Correct the names"):
        plugins.architectures()
    result = CliRunner().invoke(cli, ["list", "architectures"])
    assert result.exit_code == 1 and "'fkae'" in result.output and "Traceback" not in result.output
