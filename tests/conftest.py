"""Shared fixtures: temporary plugins that are always unregistered, and an isolated MLflow store."""

from __future__ import annotations

import types

import pytest

from wspace_core import plugins


@pytest.fixture
def register_plugin():
    """register_plugin(module_or_object, name) -> registers it for the test, removes it after."""
    added = []

    def _register(plugin, name=None):
        plugins.load_plugins()
        plugins.pm.register(plugin, name=name)
        added.append(plugin)
        plugins.reset()
        return plugin

    yield _register
    for plugin in added:
        if plugins.pm.is_registered(plugin):
            plugins.pm.unregister(plugin)
    plugins.reset()


@pytest.fixture
def plugin_namespace():
    """A fresh module object to hang hookimpls on."""
    return types.ModuleType("wspace_test_plugin")


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, monkeypatch):
    """Every test logs to its own temporary MLflow store, never to the working directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
