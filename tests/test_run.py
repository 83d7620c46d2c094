"""`wspace run` end to end at the smoke preset, configuration resolution, and MLflow records."""

import json

import pytest
from click.testing import CliRunner

from wspace.cli import cli
from wspace.config import load_toml, resolve
from wspace.presets import PRETRAIN_PRESETS
from wspace_core.registry import WspaceError


def test_flags_win_over_file_over_preset(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "smoke"\nencoder = "dwsnet"\nseed = 3\n[pretrain]\nsteps = 11\nlr = 0.5\n')
    values = load_toml(toml)
    config = resolve(values, encoder="layerwise_statistics", **{"pretrain.steps": 7})
    assert config.preset == "smoke"  # from the file
    assert config.encoder.name == "layerwise_statistics"  # flag beats file
    assert config.seed == 3  # file beats default
    assert config.pretrain.steps == 7 and config.pretrain.lr == 0.5
    assert config.pretrain.emulator_hidden == PRETRAIN_PRESETS["smoke"]["emulator_hidden"]  # preset
    assert resolve(values, preset="quick").pretrain.emulator_hidden != config.pretrain.emulator_hidden


def test_bad_toml_is_refused_with_the_key_named(tmp_path):
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("encodr = 'dwsnet'\n")
    with pytest.raises(WspaceError, match="encodr.*valid keys"):
        load_toml(bad_key)
    bad_nested = tmp_path / "b.toml"
    bad_nested.write_text("[pretrain]\nstep = 3\n")
    with pytest.raises(WspaceError, match=r"'step'.*\[pretrain\]"):
        load_toml(bad_nested)
    bad_type = tmp_path / "c.toml"
    bad_type.write_text("seed = 'zero'\n")
    with pytest.raises(WspaceError, match="seed.*int"):
        load_toml(bad_type)
    wrong_type_nested = tmp_path / "d.toml"
    wrong_type_nested.write_text("[pretrain]\nsteps = 'many'\n")
    with pytest.raises(WspaceError, match="steps must be a positive integer"):
        resolve(load_toml(wrong_type_nested))


@pytest.mark.slow
def test_wspace_run_smoke_logs_one_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs"
    args = ["run", "--preset", "smoke", "--encoder", "layerwise_statistics", "--out-dir", str(out),
            "--tracking-uri", uri]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "no-information" in result.output and "validation" in result.output
    run_dirs = list((out / "runs").iterdir())
    assert len(run_dirs) == 1
    results = json.loads((run_dirs[0] / "results.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(results["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["encoder.name"] == run.data.tags["encoder"] == "layerwise_statistics"
    assert run.data.params["pretrain.steps"] == str(PRETRAIN_PRESETS["smoke"]["steps"])
    assert run.data.tags["zoo_fingerprint"] == results["zoo_fingerprint"]
    history = client.get_metric_history(run.info.run_id, "validation/reverse_kl")
    assert len(history) >= 2 and history[0].step == 0
    assert "ood/total_variation" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"encoder.pt", "config.json", "results.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/embedding_by_task.png", "plots/emulation_fidelity.png"} <= plots

    # a second run reuses the zoo and the cached baseline
    again = CliRunner().invoke(cli, args + ["--encoder", "no_information", "--no-tracking"])
    assert again.exit_code == 0, again.output
    assert "reusing zoo" in again.output and "reusing the no-information baseline" in again.output

    # predict from the finished run's directory
    predicted = CliRunner().invoke(cli, ["predict", "--run", str(run_dirs[0]), "--json"])
    assert predicted.exit_code == 0, predicted.output
    payload = json.loads(predicted.output[predicted.output.index("{"):])
    assert set(payload["frozen"]) == {"task", "performance"}
    assert 0.0 <= payload["frozen"]["task"]["validation"]["exact_accuracy"] <= 1.0
