"""The pieces `wspace run` and `wspace compare` share (issue #12 step 3): the baseline found by
the role its class declares, atomic JSON writes, metric keys of nested figures, the fidelity
summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wspace.evaluation.fidelity import fidelity_summary, pearson
from wspace.experiment.records import metric_keys
from wspace.files import write_json_atomic
from wspace.reporting.roles import BASELINE, baseline_encoder, encoder_role
from wspace_core import plugins
from wspace_core.encoder import MechanisticEncoder
from wspace_core.hookspecs import hookimpl
from wspace_core.registry import WspaceError


def test_the_baseline_is_the_one_encoder_declaring_the_role():
    name = baseline_encoder()
    assert plugins.encoders().get(name).role == BASELINE == encoder_role(name)
    others = [n for n in plugins.encoders().names() if n != name]
    assert others and all(plugins.encoders().get(n).role != BASELINE for n in others)


class _AnotherFloor(MechanisticEncoder):
    role = BASELINE


def test_two_baselines_are_refused_naming_both(register_plugin, plugin_namespace):
    @hookimpl
    def register_encoders(register):
        register("another_floor", _AnotherFloor)

    plugin_namespace.register_encoders = register_encoders
    register_plugin(plugin_namespace, name="floor-plugin")
    with pytest.raises(WspaceError, match="another_floor") as info:
        baseline_encoder()
    assert "WSPACE_LOAD_PLUGINS" in str(info.value)


def test_atomic_json_write_numpy_strict_and_no_temp_left(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    data = {"b": np.float32(0.5), "a": [np.int64(3), float("nan")], "z": np.arange(2)}
    write_json_atomic(path, data, strict=True)
    assert json.loads(path.read_text()) == {"b": 0.5, "a": [3, None], "z": [0, 1]}
    write_json_atomic(path, {"b": 1, "a": float("inf")}, sort_keys=True)
    assert path.read_text() == '{\n  "a": Infinity,\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"kept": true}')
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"kept": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_metric_keys_flatten_nested_figures():
    nested = {"task": {"validation": {"accuracy": 0.5, "loss": 1.0}, "ood": {"accuracy": 0.25}}}
    assert metric_keys("downstream", nested) == {"downstream/task/validation/accuracy": 0.5,
                                                 "downstream/task/validation/loss": 1.0,
                                                 "downstream/task/ood/accuracy": 0.25}
    assert metric_keys("best", {}) == {}


def test_fidelity_summary():
    summary = fidelity_summary({"original": np.array([0.0, 0.5, 1.0]), "emulated": np.array([0.1, 0.4, 0.9])})
    assert summary["original_mean"] == pytest.approx(0.5)
    assert summary["emulated_mean"] == pytest.approx(1.4 / 3)
    assert summary["correlation"] == pytest.approx(np.corrcoef([0, 0.5, 1], [0.1, 0.4, 0.9])[0, 1])
    assert math.isnan(pearson([1.0, 1.0], [0.0, 1.0]))
