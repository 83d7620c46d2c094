"""The main job's last words: one sentence a newcomer understands, saying what was learned, how
well, and against what, from a run's results (``results.json``)."""

from __future__ import annotations

import math


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %" if abs(value) >= 0.01 else f"{100 * value:.1f} %"


def emulation_sentence(results: dict) -> str:
    """E.g. "In one sentence: from their weights alone, interactive_probing's z lets an emulator
    reproduce 31 % of what the 19 well-trained validation networks do (those at ≥ 0.8 of their
    task, mean 94 %), against 0.2 % for the no-information baseline on the same networks; over
    all 48 scored networks, original and emulated performance correlate at 0.55."

    "What a network does" is measured by its task's own score (formal languages: the share of
    its sampled strings in its language): reproducing 31 % of it is the emulation's score over
    the network's, averaged over the networks."""
    fid = results.get("emulation_fidelity") or {}
    good = fid.get("good") or {}
    encoder = results.get("encoder", "the encoder")
    threshold = good.get("threshold", math.nan)
    if not good.get("networks"):
        return (f"In one sentence: none of the scored validation networks performs at ≥ {threshold:g} of its "
                f"task, so this run cannot say how well {encoder}'s z lets an emulator reproduce a working "
                f"network; build the zoo with more training steps.")
    baseline = ((results.get("baseline") or {}).get("emulation_fidelity") or {}).get("good") or {}
    against = (f"against {_percent(baseline['ratio_mean'])} for the no-information baseline on the same networks"
               if baseline.get("networks") else "(no baseline emulation was scored for this run)")
    correlation = fid.get("correlation", math.nan)
    corr = ("cannot be computed (constant performance)" if correlation != correlation
            else f"correlate at {correlation:.2f}")
    return (f"In one sentence: from their weights alone, {encoder}'s z lets an emulator reproduce "
            f"{_percent(good['ratio_mean'])} of what the {good['networks']} well-trained validation networks do "
            f"(those at ≥ {threshold:g} of their task, mean {_percent(good['original_mean'])}), {against}; "
            f"over all {fid.get('networks', '?')} scored networks, original and emulated performance {corr}.")
