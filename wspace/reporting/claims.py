"""The paper's claims tested on a comparison's results ("ordering vs the paper"): each claim of
``wspace.reporting.paper.CLAIMS`` with its verdict, whether the 95% intervals are apart, and the
figures behind it; plus which encoders beat the no-information baseline. Every verdict is computed
from the results dictionary, not written by hand."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from wspace_core.heads import higher_is_better
from wspace.reporting import paper
from wspace.reporting.roles import baseline_of, is_baseline, paper_zoo, task_property, with_role
from wspace.reporting.statistics import fmt_interval, interval_dict


def table2_metric(results: Mapping) -> str:
    """The emulation metric the Table 2 claims are tested on: the published code's own (the one
    Table 2's figures are comparable with) when the results hold it, else the trained objective's."""
    first = next(iter(results["emulation"].values()), {}) if results.get("emulation") else {}
    if paper.TABLE_2_METRIC in first.get("validation", {}):
        return paper.TABLE_2_METRIC
    return results.get("objective_metric", results["objective"])


def _separated(low_side: Mapping, high_side: Mapping, seeds: int) -> bool | None:
    """Whether ``low_side``'s interval lies wholly below ``high_side``'s (None with one seed)."""
    return None if seeds <= 1 else bool(low_side["high"] < high_side["low"])


def _claim(key: str, task: str, holds: bool | None, separated: bool | None, detail: str) -> dict:
    return {"claim": key, "paper": paper.CLAIMS[key], "task": task, "holds": holds,
            "intervals_separate": separated, "detail": detail}


def _not_tested(key: str, task: str, why: str) -> dict:
    return _claim(key, task, None, None, f"not tested: {why}")


def _probing_against_mechanistic(results: Mapping, metric: str, key: str, paper_task: str):
    """For an emulation claim about the probing encoders: a "not tested" claim where it does not
    apply, else per split (split, interactive, non-interactive, best mechanistic name, its figures).
    The probing encoders are those whose role is the paper's (``paper.INTERACTIVE``, ``NONINTERACTIVE``)."""
    task = results["task"]
    if paper_zoo(task) != paper_task:
        return _not_tested(key, task, f"the paper makes it for {paper_task}")
    emulation, kinds = results["emulation"], results["kinds"]
    mechanistic = [e for e in emulation if kinds.get(e) == "mechanistic"]
    interactive, noninteractive = with_role(emulation, paper.INTERACTIVE), with_role(emulation, paper.NONINTERACTIVE)
    if interactive is None or noninteractive is None or not mechanistic:
        return _not_tested(key, task, "needs interactive_probing, noninteractive_probing and a mechanistic encoder")
    rows = []
    for split in ("validation", "ood"):
        best = min(mechanistic, key=lambda e: emulation[e][split][metric]["mean"])
        rows.append((split, emulation[interactive][split][metric],
                     emulation[noninteractive][split][metric], best, emulation[best][split][metric]))
    return rows


def _apart(pairs, seeds: int) -> bool | None:
    """Whether each (lower, higher) pair's intervals are apart (None with one seed)."""
    verdicts = [_separated(low, high, seeds) for low, high in pairs]
    return None if None in verdicts else all(verdicts)


def _probing_claim(results: Mapping, metric: str, seeds: int, key: str, zoo: str, judge) -> dict:
    """An emulation claim about the probing encoders: ``judge(split, interactive, non-interactive,
    best mechanistic name, its figures, seeds)`` gives each split's (holds, apart, detail); the
    claim holds where it holds on every split, its intervals are apart where they are on every one."""
    rows = _probing_against_mechanistic(results, metric, key, zoo)
    if isinstance(rows, dict):
        return rows
    verdicts = [judge(*row, seeds) for row in rows]
    separated = None if any(apart is None for _, apart, _ in verdicts) else all(apart for _, apart, _ in verdicts)
    return _claim(key, results["task"], all(holds for holds, _, _ in verdicts), separated,
                  f"{metric}; " + "; ".join(detail for _, _, detail in verdicts))


def _in_order(split, inter, non, best, mech, seeds):
    """Formal languages: interactive < non-interactive < the best mechanistic encoder."""
    return (bool(inter["mean"] < non["mean"] < mech["mean"]), _apart([(inter, non), (non, mech)], seeds),
            f"{split}: interactive {fmt_interval(inter)}, non-interactive {fmt_interval(non)}, "
            f"best mechanistic ({best}) {fmt_interval(mech)}")


def _similar_and_ahead(split, inter, non, best, mech, seeds):
    """Sequential MNIST: the probing encoders' intervals overlap, both below the best mechanistic one."""
    similar = inter["low"] <= non["high"] and non["low"] <= inter["high"]  # intervals overlap
    return (bool(similar and max(inter["mean"], non["mean"]) < mech["mean"]),
            _apart([(inter, mech), (non, mech)], seeds),
            f"{split}: interactive {fmt_interval(inter)}, non-interactive {fmt_interval(non)} "
            f"({'overlapping' if similar else 'apart'}), best mechanistic ({best}) {fmt_interval(mech)}")


def _emulation_order_claim(results: Mapping, metric: str, seeds: int) -> dict:
    return _probing_claim(results, metric, seeds, "emulation_order_formal_languages", paper.FORMAL_LANGUAGES,
                          _in_order)


def _probing_similar_claim(results: Mapping, metric: str, seeds: int) -> dict:
    return _probing_claim(results, metric, seeds, "probing_similar_and_ahead_mnist", paper.TILED_MNIST,
                          _similar_and_ahead)


def _ood_task_loss_claim(results: Mapping, seeds: int) -> dict:
    key, task = "ood_task_prediction_interactive_best", results["task"]
    prop = task_property(task)
    if paper_zoo(task) != paper.FORMAL_LANGUAGES:
        return _not_tested(key, task, f"the paper makes it for {paper.FORMAL_LANGUAGES}")
    interactive = with_role(results["encoders"], paper.INTERACTIVE)
    candidates, chance = {}, None
    for enc in results["encoders"]:
        for setting in ("frozen", "supervised"):
            values = [r[f"downstream_{setting}"][prop]["ood"]["loss"] for r in results.get("runs", [])
                      if r["encoder"] == enc and prop in r.get(f"downstream_{setting}", {})]
            if not values:
                continue
            if is_baseline(enc):
                chance = interval_dict(values) if setting == "frozen" else chance
            else:
                candidates[(enc, setting)] = interval_dict(values)
    if (interactive, "frozen") not in candidates or len(candidates) < 2:
        return _not_tested(key, task, "needs the pretrained interactive_probing and another encoder's "
                                      f"{prop} prediction")
    ranked = sorted(candidates, key=lambda k: candidates[k]["mean"])
    best, runner = ranked[0], ranked[1]
    holds = best == (interactive, "frozen")
    winner = candidates[(interactive, "frozen")]
    other = candidates[runner] if holds else candidates[best]
    label = {"frozen": "pretrained", "supervised": "supervised"}
    detail = (f"OOD {prop}-prediction loss: pretrained {interactive} {fmt_interval(winner)}; "
              + (f"next best {label[runner[1]]} {runner[0]} {fmt_interval(other)}" if holds
                 else f"best {label[best[1]]} {best[0]} {fmt_interval(other)}"))
    if chance is not None:
        detail += f"; chance (head on the no-information z) {fmt_interval(chance)}"
    return _claim(key, task, holds, _separated(winner, other, seeds) if holds else None, detail)


def _dwsnet_consistency_claim(results: Mapping) -> dict:
    key, task = "dwsnet_most_consistent", results["task"]
    task_prop = task_property(task)
    dwsnet = with_role(results["encoders"], paper.DWSNET)
    others = {p: e for p, e in results.get("downstream", {}).items() if p != task_prop}
    if not others:
        return _not_tested(key, task, "no property other than the task was predicted")
    ranks: dict[str, list[float]] = {}
    parts = []
    for prop, entry in others.items():
        metric = entry["metric"]
        scores = {e: v["frozen"]["ood"] for e, v in entry["encoders"].items()
                  if not is_baseline(e) and "frozen" in v and math.isfinite(v["frozen"]["ood"]["mean"])}
        order = sorted(scores, key=lambda e: scores[e]["mean"], reverse=higher_is_better(metric))
        for rank, enc in enumerate(order, 1):
            ranks.setdefault(enc, []).append(rank)
        if order:
            parts.append(f"{prop} ({metric}): best {order[0]} {fmt_interval(scores[order[0]], 3)}"
                         + (f", {dwsnet} {fmt_interval(scores[dwsnet], 3)}" if dwsnet in scores
                            and order[0] != dwsnet else ""))
    if dwsnet not in ranks or len(ranks) < 2:
        return _not_tested(key, task, "needs dwsnet and another encoder with pretrained property heads")
    mean_rank = {e: float(np.mean(r)) for e, r in ranks.items()}
    top = min(mean_rank.values())
    holds = mean_rank[dwsnet] == top and list(mean_rank.values()).count(top) == 1
    ranking = ", ".join(f"{e} {r:.2f}" for e, r in sorted(mean_rank.items(), key=lambda kv: kv[1]))
    detail = (f"mean rank over {len(others)} propert{'y' if len(others) == 1 else 'ies'} (pretrained, OOD half): "
              f"{ranking}; " + "; ".join(parts))
    return _claim(key, task, holds, None, detail)


def _sentences(claims: list[dict], task: str) -> list[str]:
    """One sentence per tested claim with its verdict, then the claims not tested."""
    sentences = []
    for c in claims:
        if c["holds"] is None:
            continue
        verdict = "**holds**" if c["holds"] else "**does not hold**"
        if c["intervals_separate"] is not None:
            verdict += " (95% intervals " + ("apart" if c["intervals_separate"] else "overlapping") + ")"
        sentences.append(f"{c['paper']} Here: {verdict} — {c['detail']}.")
    untested = [c["claim"] for c in claims if c["holds"] is None]
    if untested:
        sentences.append(f"Not tested on {task}: {', '.join(untested)}.")
    return sentences


def beat_baseline(results: Mapping) -> tuple[list[str], str]:
    """The encoders whose validation emulation loss (the trained objective's metric) is below the
    no-information baseline's, and the sentence that says so ([] and "" without a baseline)."""
    baseline = baseline_of(results["encoders"])
    encoders = [e for e in results["encoders"] if e != baseline]
    emulation = results["emulation"]
    objective = results.get("objective_metric", results["objective"])
    if baseline not in emulation:
        return [], ""
    floor = emulation[baseline]["validation"][objective]["mean"]
    beat = [e for e in encoders if e in emulation and emulation[e]["validation"][objective]["mean"] < floor]
    missed = [e for e in encoders if e in emulation and e not in beat]
    sentence = (f"Encoders with lower validation emulation loss ({objective}) than the no-information "
                f"baseline ({floor:.4f}): {', '.join(beat) or 'none'}"
                + (f"; not: {', '.join(missed)}." if missed else "."))
    return beat, sentence


def ordering_vs_paper(results: Mapping) -> dict:
    """The paper's claims (``wspace.reporting.paper.CLAIMS``) tested on the results, each with its
    intervals: emulation-loss orderings (Table 2, on the published code's metric when present),
    OOD task-prediction loss (Fig. 8), DWSNet's consistency on the other properties; plus which
    encoders beat the no-information baseline. Returns {"claims", "facts", "baseline", "text"}."""
    seeds = len(results["seeds"])
    metric = table2_metric(results)
    claims = [_emulation_order_claim(results, metric, seeds), _probing_similar_claim(results, metric, seeds),
              _ood_task_loss_claim(results, seeds), _dwsnet_consistency_claim(results)]
    facts: dict = {"table2_metric": metric, **{c["claim"]: c["holds"] for c in claims}}
    sentences = _sentences(claims, results["task"])
    beat, baseline = beat_baseline(results)
    if baseline:
        facts["beat_baseline"] = beat
        sentences.append(baseline)
    return {"claims": claims, "facts": facts, "baseline": baseline, "text": " ".join(sentences)}
