"""The main job's closing sentence and the fidelity figures it rests on."""

import math

import numpy as np

from wspace.evaluation.fidelity import fidelity_summary
from wspace.experiment.summary import emulation_sentence


def test_fidelity_summary_scores_the_networks_that_work_apart():
    original = np.array([0.9, 0.95, 0.2, 0.0])
    emulated = np.array([0.45, 0.95, 0.1, 0.0])
    summary = fidelity_summary({"original": original, "emulated": emulated}, good=0.8)
    assert summary["networks"] == 4
    assert summary["good"]["networks"] == 2
    assert math.isclose(summary["good"]["original_mean"], 0.925)
    assert math.isclose(summary["good"]["emulated_mean"], 0.7)
    assert math.isclose(summary["good"]["ratio_mean"], (0.5 + 1.0) / 2)
    assert math.isclose(summary["original_mean"], original.mean())


def test_fidelity_summary_without_working_networks_says_nan_not_zero():
    summary = fidelity_summary({"original": np.array([0.1, 0.3]), "emulated": np.array([0.0, 0.2])})
    assert summary["good"]["networks"] == 0
    assert math.isnan(summary["good"]["emulated_mean"]) and math.isnan(summary["good"]["ratio_mean"])


def _results(encoder_fid, baseline_fid):
    return {"encoder": "interactive_probing", "emulation_fidelity": encoder_fid,
            "baseline": {"emulation_fidelity": baseline_fid} if baseline_fid else {}}


def test_the_sentence_says_what_how_well_and_against_what():
    enc = fidelity_summary({"original": np.array([0.9, 0.95, 0.2]), "emulated": np.array([0.45, 0.95, 0.1])})
    base = fidelity_summary({"original": np.array([0.9, 0.95, 0.2]), "emulated": np.array([0.0, 0.0019, 0.0])})
    sentence = emulation_sentence(_results(enc, base))
    assert sentence == ("In one sentence: from their weights alone, interactive_probing's z lets an emulator "
                        "reproduce 75 % of what the 2 well-trained validation networks do (those at ≥ 0.8 of "
                        "their task, mean 92 %), against 0.1 % for the no-information baseline on the same "
                        "networks; over all 3 scored networks, original and emulated performance correlate "
                        f"at {enc['correlation']:.2f}.")


def test_the_sentence_without_a_scored_baseline_or_working_networks():
    enc = fidelity_summary({"original": np.array([0.9, 0.2]), "emulated": np.array([0.3, 0.1])})
    assert "(no baseline emulation was scored for this run)" in emulation_sentence(_results(enc, None))
    none_good = fidelity_summary({"original": np.array([0.3, 0.2]), "emulated": np.array([0.3, 0.1])})
    assert "cannot say how well" in emulation_sentence(_results(none_good, None))
