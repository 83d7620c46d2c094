"""The benchmarks run and report honestly: the tiny CPU form of benchmarks/gpu_check.py (what CI
runs, so the GPU check cannot rot), and the published-code loader's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_gpu_check_tiny_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--out", str(out)], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    table = (out / "gpu_check.md").read_text()
    assert results["tiny"] and "TINY" in table
    zoo = results["zoo"]
    assert zoo["steps"] == [4, 8] and len(zoo["seconds"]) == 2 and all(s > 0 for s in zoo["seconds"])
    assert zoo["extrapolated_steps"] == 20_000 and zoo["meets_goal"] is False  # tiny never claims the goal
    assert results["agreement"]["agree"] and results["agreement"]["max_abs_weight_diff"] <= 1e-3
    assert "CUDA not measured" in results["agreement"]["compared"]
    encoders = results["pretraining"]["encoders"]
    assert set(encoders) == {"layerwise_statistics", "flattened_weights", "parameter_transformer", "dwsnet",
                             "noninteractive_probing", "interactive_probing"}
    for row in encoders.values():  # no reference given: said so, never a made-up figure
        assert row["published"] == "not measured: no --reference given"
        assert "speedup_vs_published" not in row and row["ms_per_step_median"] > 0
    assert table.count("not measured: no --reference given") == 6


def test_reference_path_errors_name_the_fix(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import reference
    finally:
        sys.path.remove(str(BENCHMARKS))
    with pytest.raises(reference.ReferenceError, match="pass --reference with the checkout's directory"):
        reference.checkout_dir(tmp_path)
    (tmp_path / reference.CHECKOUT_NAME).mkdir()
    (tmp_path / reference.CHECKOUT_NAME / reference.MARKER).write_text("")
    assert reference.checkout_dir(tmp_path) == (tmp_path / reference.CHECKOUT_NAME).resolve()


def test_benchmarks_reject_a_missing_reference(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "pretrain_step.py"), "--reference", str(tmp_path),
                           "--encoders", "flattened_weights"], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "no checkout of the published implementation" in proc.stderr


@pytest.mark.skipif(not os.environ.get("WSPACE_REFERENCE"),
                    reason="set WSPACE_REFERENCE to a checkout of the published code to run the side-by-side")
def test_pretrain_step_beside_the_published_code(tmp_path):
    out = tmp_path / "p.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "pretrain_step.py"), "--preset", "smoke",
                           "--warmup", "0", "--steps", "1", "--encoders", "flattened_weights", "interactive_probing",
                           "--reference", os.environ["WSPACE_REFERENCE"], "--json", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["encoders"]
    for row in rows.values():
        assert row["published"]["ms_per_step_median"] > 0 and row["speedup_vs_published"] > 0


def test_zoo_build_end_to_end_without_reference(tmp_path):
    out = tmp_path / "e2e.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "zoo_build.py"), "--end-to-end", "--models", "2",
                           "--steps", "4", "--processes", "1", "--json", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "published loop (1 processes)" in proc.stdout and "not measured: no --reference given" in proc.stdout
    results = json.loads(out.read_text())
    builder = results["best"]["builder"]
    assert set(results["best"]) == {"builder"} and "speedup" not in results
    assert builder["model_steps"] == 2 * 4 and builder["wall_s"] > 0 and builder["gflops"] > 0
    assert results["zoo"]["eval_strings"] == 500 and results["zoo"]["rollouts"] == 100  # the quick preset's


def test_zoo_build_training_steps_in_one_process(tmp_path):
    """--processes 1: the pooled loop is timed under its own name, not over the in-process one."""
    out = tmp_path / "k.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "zoo_build.py"), "--ks", "2", "--seconds", "0.2",
                           "--rounds", "1", "--processes", "1", "--json", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())["results"]["2"]
    assert set(row) == {"builder_1proc_g16", "batched_1proc", "loop_1proc", "loop_1proc_pool"}
    assert all(r["model_steps_per_s"] > 0 for r in row.values())

