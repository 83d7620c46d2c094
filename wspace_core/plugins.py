"""The plugin manager: bundled plugins from one tuple, installed ones from the ``wspace``
entry-point group (lazily, once), all through the same hooks."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from functools import partial

import pluggy

from wspace_core import hookspecs
from wspace_core.registry import Registry, WspaceError

#: Bundled plugins: ordinary modules that implement the public hooks, nothing private.
BUNDLED_PLUGINS: tuple[str, ...] = (
    "wspace_lstm",
    "wspace_tiled_mnist",
    "wspace_baselines",
    "wspace_formal_languages",
    "wspace_objectives",
    "wspace_heads",
    "wspace_probing",
    "wspace_encoders",
)

#: Comma-separated names of installed (entry-point) plugins to load; empty string loads none.
LOAD_PLUGINS_ENV = "WSPACE_LOAD_PLUGINS"

#: hook name -> the kind of thing it registers (used in error messages and listings).
HOOK_KINDS: dict[str, str] = {
    "register_architectures": "architecture",
    "register_task_families": "task family",
    "register_encoders": "encoder",
    "register_probing_strategies": "probing strategy",
    "register_objectives": "objective",
    "register_heads": "head",
}

#: hook name -> the class everything it registers must subclass (module:name, imported when collecting)
HOOK_BASES: dict[str, str] = {
    "register_architectures": "wspace_core.architecture:Architecture",
    "register_task_families": "wspace_core.task:TaskFamily",
    "register_encoders": "wspace_core.encoder:Encoder",
    "register_probing_strategies": "wspace_core.probing:ProbingStrategy",
    "register_objectives": "wspace_core.objective:Objective",
    "register_heads": "wspace_core.objective:Head",
}

#: the way out when an installed plugin is broken, named in every error about one
ESCAPE_HATCH = (f"fix or uninstall it, or start wspace without it: {LOAD_PLUGINS_ENV}='' loads no installed "
                f"plugin, {LOAD_PLUGINS_ENV}=a,b only those named")

pm = pluggy.PluginManager("wspace")
pm.add_hookspecs(hookspecs)
_loaded = False
_registries: dict[str, Registry] | None = None


def _installed_names() -> list[str]:
    names = []
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == "wspace" and ep.name not in names:
                names.append(ep.name)
    return names


def _load_installed() -> None:
    wanted = os.environ.get(LOAD_PLUGINS_ENV)
    installed = _installed_names()
    names = installed if wanted is None else [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in installed and n not in BUNDLED_PLUGINS]
    if unknown:
        raise WspaceError(
            f"{LOAD_PLUGINS_ENV} names {', '.join(map(repr, unknown))}, which no installed plugin is called; "
            f"installed plugins: {', '.join(installed) or '(none)'}. Correct the names, or unset "
            f"{LOAD_PLUGINS_ENV} to load every installed plugin.")
    for name in names:
        try:
            pm.load_setuptools_entrypoints("wspace", name=name)
        except Exception as err:  # a broken third-party plugin must not take the CLI down silently
            raise WspaceError(
                f"installed plugin {name!r} failed to load ({type(err).__name__}: {err}); {ESCAPE_HATCH}."
            ) from err


def load_plugins() -> pluggy.PluginManager:
    """Register bundled and installed plugins once; a misspelled hookimpl fails here."""
    global _loaded
    if not _loaded:
        for module_name in BUNDLED_PLUGINS:
            if pm.get_plugin(module_name) is None:
                pm.register(importlib.import_module(module_name), name=module_name)
        _load_installed()
        pm.check_pending()
        _loaded = True  # only once everything loaded: a failure is reported again, not forgotten
    return pm


def _collect() -> dict[str, Registry]:
    load_plugins()
    pm.check_pending()
    registries = {hook: Registry(kind, base=_base(HOOK_BASES[hook])) for hook, kind in HOOK_KINDS.items()}
    for hook_name, registry in registries.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            try:
                impl.function(register=partial(registry.add, plugin=impl.plugin_name))
            except WspaceError:
                raise
            except Exception as err:  # a plugin's own bug: named, with the way out
                raise WspaceError(f"plugin {impl.plugin_name!r} raised {type(err).__name__} in its {hook_name} "
                                  f"hook ({err}); {ESCAPE_HATCH}") from err
    return registries


def _base(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def registries() -> dict[str, Registry]:
    """All registries, collected once (call ``reset()`` after registering or removing a plugin)."""
    global _registries
    if _registries is None:
        _registries = _collect()
    return _registries


def reset() -> None:
    """Forget collected registries so the next look-up asks the plugins again."""
    global _registries
    _registries = None


def architectures() -> Registry:
    return registries()["register_architectures"]


def task_families() -> Registry:
    return registries()["register_task_families"]


def encoders() -> Registry:
    return registries()["register_encoders"]


def probing_strategies() -> Registry:
    return registries()["register_probing_strategies"]


def objectives() -> Registry:
    return registries()["register_objectives"]


def heads() -> Registry:
    return registries()["register_heads"]


def plugin_info(include_bundled: bool = False) -> list[dict]:
    """What ``wspace plugins`` prints: name, version and hooks of each plugin."""
    load_plugins()
    dist_of = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        bundled = name in BUNDLED_PLUGINS
        if bundled and not include_bundled:
            continue
        dist = dist_of.get(id(plugin))
        if dist is not None:
            version = dist.version
        else:
            from wspace_core import __version__ as version
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "version": version, "bundled": bundled, "hooks": hooks})
    return out
