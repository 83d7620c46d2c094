"""The comparison report: bootstrap intervals over seeds, its own figures (downstream bars, probe
heatmaps), the paper's claims tested ("ordering vs the paper"; the claims and Table 2's figures
are data in ``wspace.reporting.paper``), and report.md rendered from the results dictionary
that ``wspace.experiment.compare.compare`` builds (and writes as results.json).

Every number in report.md is read from that dictionary; the ordering paragraph is computed from
it, not written by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from wspace.reporting import paper
from wspace.reporting.plots import PathLike, _figure, _palette, _save

BASELINE = "no_information"


class Interval(NamedTuple):
    """A mean and its bootstrap interval."""

    mean: float
    low: float
    high: float


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_resamples: int = 10_000, alpha: float = 0.05,
                 seed: int = 0) -> Interval:
    """Percentile bootstrap of the mean: resample the values with replacement ``n_resamples``
    times, take the alpha/2 and 1-alpha/2 quantiles of the resampled means. NaNs are dropped;
    one value gives the degenerate interval (v, v, v); none gives NaNs. Deterministic by ``seed``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    block = max(1, 4_000_000 // x.size)  # bounded memory: at most ~4 M indices at once
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        index = rng.integers(0, x.size, size=(stop - start, x.size))  # (B, n)
        means[start:stop] = x[index].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(mean, float(min(low, mean)), float(max(high, mean)))


def interval_dict(values: Sequence[float], seed: int = 0) -> dict:
    """{"mean", "low", "high", "n", "values"}: what results.json stores for a figure over seeds.
    None (how results.json writes NaN) counts as NaN."""
    clean = [math.nan if v is None else float(v) for v in values]
    ci = bootstrap_ci(clean, seed=seed)
    return {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": len(clean), "values": clean}


def fmt_number(value: float, digits: int = 4) -> str:
    """Fixed decimals, or 3 significant digits for a small non-zero value (e.g. an MSE of 2.1e-05)."""
    if not math.isfinite(value):
        return "–"
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def fmt_interval(entry: Mapping | None, digits: int = 4) -> str:
    """"mean [low, high]" (just the mean for one seed; "–" for none)."""
    if not entry or entry.get("mean") is None or not math.isfinite(entry["mean"]):
        return "–"
    mean = fmt_number(entry["mean"], digits)
    if entry.get("n", 0) <= 1:
        return mean
    return f"{mean} [{fmt_number(entry['low'], digits)}, {fmt_number(entry['high'], digits)}]"


def higher_is_better(metric: str) -> bool:
    return "accuracy" in metric


# ---- figures ----------------------------------------------------------------------------------

def probe_heatmap(probes: np.ndarray, path: PathLike, title: str, network_labels: Sequence[str] | None = None,
                  token_labels: Sequence[str] | None = None) -> Path:
    """The probe inputs a probing encoder sent: probes (M, T, P, I) -> a grid of heatmaps, one row
    per network and one column per parallel probe, each input token (or input dimension) × step."""
    probes = np.asarray(probes, dtype=np.float64)
    if probes.ndim != 4:
        raise ValueError(f"probes must have shape (networks, steps, probes, inputs), got {probes.shape}")
    M, T, P, I = probes.shape
    fig = _figure((1.0 + 2.2 * P + 0.8, 0.6 + 1.6 * M))
    axes = fig.subplots(M, P, squeeze=False)
    vmin, vmax = float(probes.min()), float(probes.max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    image = None
    for m in range(M):
        for p in range(P):
            ax = axes[m][p]
            image = ax.imshow(probes[m, :, p, :].T, aspect="auto", origin="lower", cmap="magma",
                              vmin=vmin, vmax=vmax, interpolation="nearest")  # (I, T)
            ax.set_yticks(range(I) if I <= 12 else np.linspace(0, I - 1, 5).round().astype(int))
            if token_labels is not None and I <= 12:
                ax.set_yticklabels(list(token_labels))
            if m == M - 1:
                ax.set_xlabel("probing step")
            if m == 0:
                ax.set_title(f"probe {p}", fontsize="small")
            if p == 0:
                label = network_labels[m] if network_labels is not None else f"network {m}"
                ax.set_ylabel(f"{label}\ninput", fontsize="x-small")
    fig.colorbar(image, ax=axes, label="probe input", shrink=0.8)
    fig.suptitle(title)
    return _save(fig, path)


def downstream_bar_plot(entries: Mapping[str, Mapping[str, Mapping[str, Mapping]]], metric: str, path: PathLike,
                        title: str, splits: Sequence[str] = ("validation", "ood")) -> Path:
    """Grouped bars with bootstrap error bars. entries: encoder -> setting ("frozen",
    "supervised") -> split -> interval dict. One panel per split, one bar per (encoder, setting)."""
    encoders = list(entries)
    settings = sorted({s for e in entries.values() for s in e}, key=["frozen", "supervised"].index)
    fig = _figure((1.5 + 1.1 * max(len(encoders), 2) * len(splits), 4.2))
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    palette = _palette(max(len(settings), 2))
    width = 0.8 / max(len(settings), 1)
    x = np.arange(len(encoders))
    for ax, split in zip(axes, splits):
        for k, setting in enumerate(settings):
            mean, low, high = [], [], []
            for enc in encoders:
                entry = entries[enc].get(setting, {}).get(split)
                m = entry["mean"] if entry else math.nan
                mean.append(m)
                low.append(m - entry["low"] if entry else 0.0)
                high.append(entry["high"] - m if entry else 0.0)
            label = "pretrained (frozen z + head)" if setting == "frozen" else "supervised (end to end)"
            ax.bar(x + (k - (len(settings) - 1) / 2) * width, mean, width, yerr=[low, high], capsize=3,
                   color=palette[k], label=label)
        ax.set_xticks(x)
        ax.set_xticklabels(encoders, rotation=30, ha="right", fontsize="small")
        ax.set(title=split, ylabel=metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


# ---- the ordering paragraph: the paper's claims, tested ---------------------------------------

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
    apply, else per split (split, interactive, non-interactive, best mechanistic name, its figures)."""
    task = results["task"]
    if task != paper_task:
        return _not_tested(key, task, f"the paper makes it for {paper_task}")
    emulation, kinds = results["emulation"], results["kinds"]
    mechanistic = [e for e in emulation if kinds.get(e) == "mechanistic"]
    if paper.INTERACTIVE not in emulation or paper.NONINTERACTIVE not in emulation or not mechanistic:
        return _not_tested(key, task, "needs interactive_probing, noninteractive_probing and a mechanistic encoder")
    rows = []
    for split in ("validation", "ood"):
        best = min(mechanistic, key=lambda e: emulation[e][split][metric]["mean"])
        rows.append((split, emulation[paper.INTERACTIVE][split][metric],
                     emulation[paper.NONINTERACTIVE][split][metric], best, emulation[best][split][metric]))
    return rows


def _emulation_order_claim(results: Mapping, metric: str, seeds: int) -> dict:
    key = "emulation_order_formal_languages"
    rows = _probing_against_mechanistic(results, metric, key, paper.FORMAL_LANGUAGES)
    if isinstance(rows, dict):
        return rows
    holds, separated, parts = True, True, []
    for split, inter, non, best, mech in rows:
        holds &= inter["mean"] < non["mean"] < mech["mean"]
        sep = _separated(inter, non, seeds), _separated(non, mech, seeds)
        separated = None if None in sep or separated is None else separated and all(sep)
        parts.append(f"{split}: interactive {fmt_interval(inter)}, non-interactive {fmt_interval(non)}, "
                     f"best mechanistic ({best}) {fmt_interval(mech)}")
    return _claim(key, results["task"], bool(holds), separated, f"{metric}; " + "; ".join(parts))


def _probing_similar_claim(results: Mapping, metric: str, seeds: int) -> dict:
    key = "probing_similar_and_ahead_mnist"
    rows = _probing_against_mechanistic(results, metric, key, paper.TILED_MNIST)
    if isinstance(rows, dict):
        return rows
    holds, separated, parts = True, True, []
    for split, inter, non, best, mech in rows:
        similar = inter["low"] <= non["high"] and non["low"] <= inter["high"]  # intervals overlap
        holds &= similar and max(inter["mean"], non["mean"]) < mech["mean"]
        sep = _separated(inter, mech, seeds), _separated(non, mech, seeds)
        separated = None if None in sep or separated is None else separated and all(sep)
        parts.append(f"{split}: interactive {fmt_interval(inter)}, non-interactive {fmt_interval(non)} "
                     f"({'overlapping' if similar else 'apart'}), best mechanistic ({best}) {fmt_interval(mech)}")
    return _claim(key, results["task"], bool(holds), separated, f"{metric}; " + "; ".join(parts))


def _ood_task_loss_claim(results: Mapping, seeds: int) -> dict:
    key, task = "ood_task_prediction_interactive_best", results["task"]
    prop = paper.TASK_PROPERTY.get(task)
    if task != paper.FORMAL_LANGUAGES:
        return _not_tested(key, task, f"the paper makes it for {paper.FORMAL_LANGUAGES}")
    candidates, chance = {}, None
    for enc in results["encoders"]:
        for setting in ("frozen", "supervised"):
            values = [r[f"downstream_{setting}"][prop]["ood"]["loss"] for r in results.get("runs", [])
                      if r["encoder"] == enc and prop in r.get(f"downstream_{setting}", {})]
            if not values:
                continue
            if enc == BASELINE:
                chance = interval_dict(values) if setting == "frozen" else chance
            else:
                candidates[(enc, setting)] = interval_dict(values)
    if (paper.INTERACTIVE, "frozen") not in candidates or len(candidates) < 2:
        return _not_tested(key, task, "needs the pretrained interactive_probing and another encoder's "
                                      f"{prop} prediction")
    ranked = sorted(candidates, key=lambda k: candidates[k]["mean"])
    best, runner = ranked[0], ranked[1]
    holds = best == (paper.INTERACTIVE, "frozen")
    winner = candidates[(paper.INTERACTIVE, "frozen")]
    other = candidates[runner] if holds else candidates[best]
    label = {"frozen": "pretrained", "supervised": "supervised"}
    detail = (f"OOD {prop}-prediction loss: pretrained interactive_probing {fmt_interval(winner)}; "
              + (f"next best {label[runner[1]]} {runner[0]} {fmt_interval(other)}" if holds
                 else f"best {label[best[1]]} {best[0]} {fmt_interval(other)}"))
    if chance is not None:
        detail += f"; chance (head on the no-information z) {fmt_interval(chance)}"
    return _claim(key, task, holds, _separated(winner, other, seeds) if holds else None, detail)


def _dwsnet_consistency_claim(results: Mapping) -> dict:
    key, task = "dwsnet_most_consistent", results["task"]
    task_prop = paper.TASK_PROPERTY.get(task)
    others = {p: e for p, e in results.get("downstream", {}).items() if p != task_prop}
    if not others:
        return _not_tested(key, task, "no property other than the task was predicted")
    ranks: dict[str, list[float]] = {}
    parts = []
    for prop, entry in others.items():
        metric = entry["metric"]
        scores = {e: v["frozen"]["ood"] for e, v in entry["encoders"].items()
                  if e != BASELINE and "frozen" in v and math.isfinite(v["frozen"]["ood"]["mean"])}
        order = sorted(scores, key=lambda e: scores[e]["mean"], reverse=higher_is_better(metric))
        for rank, enc in enumerate(order, 1):
            ranks.setdefault(enc, []).append(rank)
        if order:
            parts.append(f"{prop} ({metric}): best {order[0]} {fmt_interval(scores[order[0]], 3)}"
                         + (f", dwsnet {fmt_interval(scores[paper.DWSNET], 3)}" if paper.DWSNET in scores
                            and order[0] != paper.DWSNET else ""))
    if paper.DWSNET not in ranks or len(ranks) < 2:
        return _not_tested(key, task, "needs dwsnet and another encoder with pretrained property heads")
    mean_rank = {e: float(np.mean(r)) for e, r in ranks.items()}
    top = min(mean_rank.values())
    holds = mean_rank[paper.DWSNET] == top and list(mean_rank.values()).count(top) == 1
    ranking = ", ".join(f"{e} {r:.2f}" for e, r in sorted(mean_rank.items(), key=lambda kv: kv[1]))
    detail = (f"mean rank over {len(others)} propert{'y' if len(others) == 1 else 'ies'} (pretrained, OOD half): "
              f"{ranking}; " + "; ".join(parts))
    return _claim(key, task, holds, None, detail)


def ordering_vs_paper(results: Mapping) -> dict:
    """The paper's claims (``wspace.reporting.paper.CLAIMS``) tested on the results, each with its
    intervals: emulation-loss orderings (Table 2, on the published code's metric when present),
    OOD task-prediction loss (Fig. 8), DWSNet's consistency on the other properties; plus which
    encoders beat the no-information baseline. Returns {"claims", "facts", "text"}."""
    seeds = len(results["seeds"])
    metric = table2_metric(results)
    claims = [_emulation_order_claim(results, metric, seeds), _probing_similar_claim(results, metric, seeds),
              _ood_task_loss_claim(results, seeds), _dwsnet_consistency_claim(results)]
    facts: dict = {"table2_metric": metric, **{c["claim"]: c["holds"] for c in claims}}
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
        sentences.append(f"Not tested on {results['task']}: {', '.join(untested)}.")

    encoders = [e for e in results["encoders"] if e != BASELINE]
    emulation = results["emulation"]
    objective = results.get("objective_metric", results["objective"])
    baseline = ""
    if BASELINE in emulation:
        floor = emulation[BASELINE]["validation"][objective]["mean"]
        beat = [e for e in encoders if e in emulation and emulation[e]["validation"][objective]["mean"] < floor]
        facts["beat_baseline"] = beat
        missed = [e for e in encoders if e in emulation and e not in beat]
        baseline = (f"Encoders with lower validation emulation loss ({objective}) than the no-information "
                    f"baseline ({floor:.4f}): {', '.join(beat) or 'none'}"
                    + (f"; not: {', '.join(missed)}." if missed else "."))
        sentences.append(baseline)
    return {"claims": claims, "facts": facts, "baseline": baseline, "text": " ".join(sentences)}


# ---- report.md --------------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _rel(path: str | None, root: Path) -> str:
    if not path:
        return ""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def paper_table2(results: Mapping) -> list[str]:
    """Table 2 in the paper's form: each encoder's emulation loss as the published code computes it
    (``table2_metric``), with the paper's figure beside it (``wspace.reporting.paper.TABLE_2``; "–"
    where none is recorded)."""
    metric = table2_metric(results)
    comparable = metric == paper.TABLE_2_METRIC  # the paper's figures sit beside that metric only
    header = ["encoder", "kind"] + [c for split in ("validation", "ood")
                                    for c in ((f"{split} {metric}", f"paper {split}") if comparable
                                              else (f"{split} {metric}",))]
    rows = []
    for enc in results["encoders"]:
        entry = results["emulation"].get(enc)
        if not entry:
            continue
        kind = "baseline" if enc == BASELINE else results["kinds"].get(enc, "")
        row = [enc, kind]
        for split in ("validation", "ood"):
            figure = paper.TABLE_2.get((results["task"], enc, split))
            row.append(fmt_interval(entry[split].get(metric)))
            if comparable:
                row.append("–" if figure is None else f"{figure:g}")
        rows.append(row)
    return _table(header, rows)


def emulation_table(results: Mapping) -> list[str]:
    objective = results.get("objective_metric", results["objective"])
    metrics = [objective] + [m for m in results.get("emulation_metrics", []) if m != objective]
    header = ["encoder", "kind"] + [f"{split} {m}" for m in metrics for split in ("validation", "ood")]
    rows = []
    for enc in results["encoders"]:
        entry = results["emulation"].get(enc)
        if not entry:
            continue
        kind = "baseline" if enc == BASELINE else results["kinds"].get(enc, "")
        rows.append([enc, kind] + [fmt_interval(entry[split].get(m)) for m in metrics
                                   for split in ("validation", "ood")])
    return _table(header, rows)


def _downstream_label(encoder: str) -> str:
    return f"{encoder} (chance: z carries nothing)" if encoder == BASELINE else encoder


def details_table(entry: Mapping) -> list[str]:
    """The head's other figures (e.g. each offset's accuracy): one row per encoder and setting."""
    details = entry.get("details") or {}
    metrics = sorted({m for d in details.values() for splits in d.values() for ms in splits.values() for m in ms})
    if not metrics:
        return []
    columns = [(m, split) for m in metrics for split in ("validation", "ood")]
    rows = []
    for enc, by_setting in details.items():
        for setting, splits in by_setting.items():
            rows.append([_downstream_label(enc), "pretrained" if setting == "frozen" else setting]
                        + [fmt_interval(splits.get(split, {}).get(m), 3) for m, split in columns])
    return ["", "Other figures of the same heads:", ""] + _table(
        ["encoder", "setting"] + [f"{m} {split}" for m, split in columns], rows)


def render_markdown(results: Mapping, report_dir: PathLike) -> str:
    """report.md: readable on its own, every figure taken from ``results``."""
    root = Path(report_dir)
    z = results["zoo"]
    v = results["versions"]
    seeds = results["seeds"]
    lines = [f"# wspace comparison: {results['arch']} networks on {results['task']} ({results['preset']} preset)",
             "",
             f"Command: `{results['command']}`", "",
             f"Versions: wspace {v['wspace']}, torch {v['torch']}, Python {v['python']}; device {results['device']}. "
             f"Wall time {results['seconds'] / 60:.1f} min.", "",
             f"Zoo: `{z['path']}` — fingerprint `{z['fingerprint']}`, {z['num_models']} networks × "
             f"{z['rows_per_model']} snapshot(s) = {z['num_rows']} rows ({', '.join(f'{k} {n}' for k, n in z['rows_per_split'].items())}), "
             f"{z['num_params']} parameters per network.", "",
             f"Encoders: {', '.join(e for e in results['encoders'] if e != BASELINE)}; baseline {BASELINE}. "
             f"Seeds: {', '.join(map(str, seeds))} ({len(seeds)}). Figures are mean [95% percentile-bootstrap "
             f"interval of the mean over seeds]" + (" (one seed: the value itself)." if len(seeds) == 1 else "."),
             ""]
    for note in results.get("notes", []):
        lines += [f"Note: {note}", ""]
    if results.get("mlflow", {}).get("parent_run_id"):
        lines += [f"MLflow: parent run `{results['mlflow']['parent_run_id']}` "
                  f"({results['mlflow'].get('tracking') or 'tracking store'}), one child run per encoder and seed.", ""]

    lines += ["## Ordering vs the paper", "",
              "Each of the paper's claims, tested on these results (means with 95% bootstrap intervals over "
              "seeds; \"apart\": the intervals do not overlap).", ""]
    claims = results["ordering"].get("claims")
    if claims:
        verdicts = {True: "holds", False: "does not hold", None: "not tested"}
        lines += _table(["paper's claim", "here", "intervals apart", "figures"],
                        [[c["paper"], f"**{verdicts[c['holds']]}**",
                          {True: "yes", False: "no", None: "–"}[c["intervals_separate"]], c["detail"]]
                         for c in claims])
        if results["ordering"].get("baseline"):
            lines += ["", results["ordering"]["baseline"]]
    else:  # a report written before the claims were tested
        lines += [results["ordering"]["text"]]
    lines += [""]

    info = results.get("metric_info", {})
    metric = table2_metric(results)
    objective = results.get("objective_metric", results["objective"])
    lines += ["## Self-supervised emulation loss (Table 2)", "",
              f"Emulation loss of the emulator conditioned on z, on the validation and OOD networks (lower is "
              f"better). Trained objective: {results['objective']} over "
              f"{results.get('loss_positions', 'masked')} rollout positions (reported as {objective}).", "",
              ("In the paper's form: " if metric == paper.TABLE_2_METRIC else "Headline metric: ") + metric
              + (f" — {info[metric]['description']}" if metric in info and info[metric].get("description") else "")
              + (". \"paper\": the figure in the paper's Table 2 (`wspace/reporting/paper.py`; – where none is recorded)."
                 if metric == paper.TABLE_2_METRIC else
                 f". These results hold no {paper.TABLE_2_METRIC} (written before wspace reported the published "
                 f"code's metric), so the paper's figures are not shown beside them."),
              ""]
    lines += paper_table2(results) + [""]
    lines += ["Every metric:", ""]
    lines += emulation_table(results) + [""]
    if info:
        lines += [f"- `{name}`: {i.get('description') or i.get('objective')}" for name, i in info.items()] + [""]

    if results.get("downstream"):
        lines += ["## Downstream property prediction (Fig. 8/18/19)", "",
                  "Pretrained: the frozen encoder's z with a trained head. Supervised: the same encoder "
                  "architecture trained end to end with the head"
                  + (" (skipped: --skip-supervised)." if results.get("skip_supervised") else ".")
                  + " Heads train on the training networks plus half of the OOD networks and are scored on the "
                    "validation networks and the other OOD half.", ""]
        for prop, entry in results["downstream"].items():
            metric = entry["metric"]
            arrow = "higher" if higher_is_better(metric) else "lower"
            lines += [f"### {prop} ({metric}, {arrow} is better)", ""]
            rows = []
            for enc, settings in entry["encoders"].items():
                rows.append([_downstream_label(enc)] + [fmt_interval(settings.get(s, {}).get(split), 3)
                                                        for s in ("frozen", "supervised") for split in ("validation", "ood")])
            lines += _table(["encoder", "pretrained validation", "pretrained ood", "supervised validation",
                             "supervised ood"], rows)
            lines += details_table(entry)
            plot = results["plots"].get("downstream", {}).get(prop)
            if plot:
                lines += ["", f"![{prop}]({_rel(plot, root)})"]
            lines += [""]

    if results.get("fidelity"):
        lines += ["## Emulation fidelity (Fig. 5/14)", "",
                  "Each validation network's performance against the performance of its emulation (the "
                  "emulator conditioned on its z), scored by the task family in the same way.", ""]
        rows = []
        for enc, entry in results["fidelity"].items():
            plot = results["plots"].get("fidelity", {}).get(enc)
            rows.append([enc, fmt_interval(entry["correlation"], 3), fmt_interval(entry["original_mean"], 3),
                         fmt_interval(entry["emulated_mean"], 3),
                         f"[scatter]({_rel(plot, root)})" if plot else ""])
        lines += _table(["encoder", "correlation", "original performance", "emulated performance", "plot"], rows)
        lines += [""]

    perm = results.get("permutation")
    if perm:
        lines += ["## Hidden-neuron permutations (Fig. 16/17)", "",
                  f"Ratio mean‖E(θ̂)−E(θ)‖ / mean‖E(ψ)−E(θ)‖ over {perm['networks']} {perm['split']} networks θ, "
                  "θ̂ = θ under a random hidden-neuron permutation, ψ another network. ~0: E does not see the "
                  "permutation. Correct: every tensor that must move does; incomplete: one axis is left out "
                  "(mean, min and max over the axes that can be left out). The function (outputs on the "
                  "rollout inputs) and the raw weights are the references.", ""]
        rows = []
        for name, row in perm["rows"].items():
            inc = perm["incomplete"][name]
            rows.append([name, f"{row['correct']:.4f}", f"{inc['mean']:.4f}", f"{inc['min']:.4f}", f"{inc['max']:.4f}"])
        lines += _table(["representation", "correct", "incomplete (mean)", "incomplete (min)", "incomplete (max)"],
                        rows)
        lines += ["", "<details><summary>every incomplete permutation</summary>", ""]
        columns = perm["columns"]
        lines += _table(["representation"] + columns,
                        [[name] + [f"{row[c]:.4f}" for c in columns] for name, row in perm["rows"].items()])
        lines += ["", "</details>", ""]

    plots = results.get("plots", {})
    if plots.get("embeddings") or plots.get("raw_weights"):
        lines += ["## Embeddings (Fig. 6/7/20–22)", "",
                  f"PCA of z of the validation networks (seed {seeds[0]}), coloured by task and by performance; "
                  "the raw flattened weights for contrast.", ""]
        rows = [[enc, f"[by task]({_rel(p['task'], root)})", f"[by performance]({_rel(p['performance'], root)})"]
                for enc, p in plots.get("embeddings", {}).items()]
        if plots.get("raw_weights"):
            p = plots["raw_weights"]
            rows.append(["raw weights", f"[by task]({_rel(p['task'], root)})",
                         f"[by performance]({_rel(p['performance'], root)})"])
        lines += _table(["representation", "coloured by task", "coloured by performance"], rows) + [""]

    if plots.get("probes"):
        lines += ["## Probing inputs (Fig. 15)", "",
                  f"The inputs the trained probing encoders (seed {seeds[0]}) sent to a few validation networks: "
                  "one row per network, one column per parallel probe, input token × probing step.", ""]
        for enc, path in plots["probes"].items():
            lines += [f"![{enc} probes]({_rel(path, root)})", ""]

    if plots.get("loss_curves"):
        lines += ["## Pretraining curves", "", f"![validation emulation loss]({_rel(plots['loss_curves'], root)})", ""]

    lines += ["## Files", "", "- `results.json`: every number above, per seed and aggregated.",
              "- `plots/`: the figures.", ""]
    return "\n".join(lines)
