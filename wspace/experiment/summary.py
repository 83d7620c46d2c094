"""The main job's last words: one sentence a newcomer understands, saying what was learned, how
well, and against what, from a run's results (``results.json``)."""

from __future__ import annotations

import math

#: networks this good at their own task are the ones whose emulation is judged (issue #13)
GOOD_PERFORMANCE = 0.8


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %" if value >= 0.01 else f"{100 * value:.1f} %"


def emulation_sentence(results: dict) -> str:
    """E.g. "From their weights alone, interactive_probing's z lets an emulator reproduce the
    validation networks: the 19 networks that get 94 % of their strings right are emulated at 31 %
    (the no-information baseline: 0.2 % on the same networks), and over all 60 scored networks
    original and emulated performance correlate at 0.55."."""
    fid = results.get("emulation_fidelity") or {}
    good = fid.get("good") or {}
    encoder = results.get("encoder", "the encoder")
    if not good.get("networks"):
        return (f"None of the scored validation networks performs at ≥ {GOOD_PERFORMANCE:g} of its task, so "
                f"this run cannot say how well {encoder}'s z lets an emulator reproduce a working network; "
                f"train the zoo longer (more zoo steps).")
    baseline = ((results.get("baseline") or {}).get("emulation_fidelity") or {}).get("good") or {}
    against = (f"the no-information baseline, whose z says nothing about the network: "
               f"{_percent(baseline['emulated_mean'])} on the same networks"
               if baseline.get("networks") else "no baseline emulation was scored for this run")
    correlation = fid.get("correlation", math.nan)
    corr = ("cannot be computed (constant performance)" if correlation != correlation
            else f"correlate at {correlation:.2f}")
    return (f"From their weights alone, {encoder}'s z lets an emulator imitate unseen validation networks: "
            f"the {good['networks']} networks that perform at ≥ {GOOD_PERFORMANCE:g} of their task "
            f"(mean {_percent(good['original_mean'])}) are emulated at {_percent(good['emulated_mean'])} "
            f"({against}), and over all {fid.get('networks', '?')} scored networks original and emulated "
            f"performance {corr}.")
