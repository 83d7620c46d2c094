"""The comparison report: bootstrap intervals over seeds, its own figures (downstream bars, probe
heatmaps), the "ordering vs the paper" facts, and report.md rendered from the results dictionary
that ``wspace_core.compare.compare`` builds (and writes as results.json).

Every number in report.md is read from that dictionary; the ordering paragraph is computed from
it, not written by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from wspace_core.plots import PathLike, _figure, _palette, _save

#: the paper's best encoder at formal-language task prediction (Herrmann et al. 2024, Fig. 8)
PAPER_BEST_TASK_PREDICTOR = "interactive_probing"
#: the task family whose task-prediction ordering the paper reports
PAPER_TASK = "formal_languages"
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


# ---- the ordering paragraph -------------------------------------------------------------------

def ordering_vs_paper(results: Mapping) -> dict:
    """Facts computed from the results, and the paragraph that states them:
    the best encoder at task prediction (frozen z) vs the paper's (interactive probing, on formal
    languages), and whether the probing (functionalist) encoders have lower emulation loss than
    the mechanistic ones (the paper: yes)."""
    facts: dict = {}
    sentences: list[str] = []
    objective = results["objective"]
    kinds = results["kinds"]
    encoders = [e for e in results["encoders"] if e != BASELINE]

    task_prop = results.get("downstream", {}).get("task")
    if task_prop:
        metric = task_prop["metric"]
        better = max if higher_is_better(metric) else min
        best = {}
        for split in ("validation", "ood"):
            entries = {e: v["frozen"][split] for e, v in task_prop["encoders"].items()
                       if e != BASELINE and "frozen" in v and math.isfinite(v["frozen"][split]["mean"])}
            if entries:
                top = better(entry["mean"] for entry in entries.values())
                tied = sorted(e for e, entry in entries.items() if entry["mean"] == top)
                name = tied[0] if len(tied) == 1 else None
                rest = [entry for e, entry in entries.items() if e not in tied]
                runner = better(rest, key=lambda entry: entry["mean"]) if rest else None
                separated = None
                if name is not None and runner is not None and len(results["seeds"]) > 1:
                    win = entries[name]
                    separated = (win["low"] > runner["high"]) if higher_is_better(metric) else (win["high"] < runner["low"])
                best[split] = {"encoder": name, "tied": tied, metric: top, "interval_separates_from_next": separated}
        facts["best_task_predictor"] = best
        facts["paper_best_task_predictor"] = PAPER_BEST_TASK_PREDICTOR
        if "validation" in best:
            b = best["validation"]
            if b["encoder"] is None:
                text = (f"At predicting the task from the frozen z, no encoder is best here: "
                        f"{', '.join(b['tied'])} tie at {metric} {b[metric]:.3f} on validation.")
            else:
                text = (f"At predicting the task from the frozen z, the best encoder here is **{b['encoder']}** "
                        f"({metric} {b[metric]:.3f} on validation")
                if b["interval_separates_from_next"] is not None:
                    text += (", its 95% interval clear of the next encoder's" if b["interval_separates_from_next"]
                             else ", its 95% interval overlapping the next encoder's")
                o = best.get("ood")
                if o:
                    text += (f"; on the OOD half {o['encoder']} leads with {o[metric]:.3f}"
                             if o["encoder"] not in (b["encoder"], None)
                             else f"; {o[metric]:.3f} on the OOD half")
                text += ")."
                chance = task_prop["encoders"].get(BASELINE, {}).get("frozen", {}).get("validation")
                if chance is not None:
                    win = task_prop["encoders"][b["encoder"]]["frozen"]["validation"]
                    above = (win["mean"] > chance["mean"]) if higher_is_better(metric) else (win["mean"] < chance["mean"])
                    clear = ((win["low"] > chance["high"]) if higher_is_better(metric)
                             else (win["high"] < chance["low"])) if len(results["seeds"]) > 1 else None
                    facts["best_task_predictor_above_chance"] = {"chance": chance["mean"], "above": above,
                                                                 "interval_clear_of_chance": clear}
                    text += (f" The chance level (a head on the no-information z) is {chance['mean']:.3f}: the best "
                             f"encoder is {'above' if above else 'not above'} it"
                             + ("" if clear is None else
                                f", {'its interval clear of' if clear else 'its interval overlapping'} chance's")
                             + ".")
            if results["task"] == PAPER_TASK:
                if PAPER_BEST_TASK_PREDICTOR not in encoders:
                    agrees, verdict = None, f"{PAPER_BEST_TASK_PREDICTOR} was not among the compared encoders"
                elif b["encoder"] is None:
                    agrees, verdict = False, "no single best encoder here, so this does not reproduce it"
                else:
                    agrees = b["encoder"] == PAPER_BEST_TASK_PREDICTOR
                    verdict = "this agrees" if agrees else "this differs"
                facts["agrees_with_paper_on_task_prediction"] = agrees
                text += f" The paper's best at formal-language task prediction is {PAPER_BEST_TASK_PREDICTOR}: {verdict}."
            else:
                text += (f" (The paper's task-prediction ordering is reported for {PAPER_TASK}; "
                         f"this comparison is on {results['task']}.)")
            sentences.append(text)

    emulation = results["emulation"]
    loss = {e: emulation[e]["validation"][objective] for e in encoders if e in emulation}
    functionalist = {e: v for e, v in loss.items() if kinds.get(e) == "functionalist"}
    mechanistic = {e: v for e, v in loss.items() if kinds.get(e) == "mechanistic"}
    if functionalist and mechanistic:
        best_f = min(functionalist, key=lambda e: functionalist[e]["mean"])
        best_m = min(mechanistic, key=lambda e: mechanistic[e]["mean"])
        worst_f = max(functionalist[e]["mean"] for e in functionalist)
        best_m_mean = mechanistic[best_m]["mean"]
        all_ahead = worst_f < best_m_mean
        best_ahead = functionalist[best_f]["mean"] < best_m_mean
        separated = functionalist[best_f]["high"] < mechanistic[best_m]["low"]
        facts["probing_ahead_in_emulation_loss"] = {
            "best_probing": best_f, "best_probing_loss": functionalist[best_f]["mean"],
            "best_mechanistic": best_m, "best_mechanistic_loss": best_m_mean,
            "best_probing_ahead": best_ahead, "every_probing_ahead_of_every_mechanistic": all_ahead,
            "intervals_separate": separated, "paper": True,
        }
        answer = "yes" if all_ahead else ("partly" if best_ahead else "no")
        text = (f"Probing (functionalist) encoders ahead of mechanistic ones in validation emulation loss "
                f"({objective}): **{answer}** — the best probing encoder, {best_f}, reaches "
                f"{functionalist[best_f]['mean']:.4f}, the best mechanistic one, {best_m}, {best_m_mean:.4f}")
        if answer == "partly":
            text += "; not every probing encoder is ahead of every mechanistic one"
        if len(results["seeds"]) > 1:
            text += (f"; their 95% intervals {'do not overlap' if separated else 'overlap'}"
                     if best_ahead else "")
        text += ". The paper: yes."
        sentences.append(text)
    else:
        sentences.append("Probing vs mechanistic emulation loss: not computed (the comparison needs at least "
                         "one encoder of each kind).")

    if BASELINE in emulation:
        floor = emulation[BASELINE]["validation"][objective]["mean"]
        beat = [e for e in encoders if e in loss and loss[e]["mean"] < floor]
        facts["beat_baseline"] = beat
        missed = [e for e in encoders if e in loss and e not in beat]
        sentences.append(f"Encoders with lower validation emulation loss than the no-information baseline "
                         f"({floor:.4f}): {', '.join(beat) or 'none'}"
                         + (f"; not: {', '.join(missed)}." if missed else "."))
    return {"facts": facts, "text": " ".join(sentences)}


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


def emulation_table(results: Mapping) -> list[str]:
    objective = results["objective"]
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

    lines += ["## Ordering vs the paper", "", results["ordering"]["text"], ""]

    lines += ["## Self-supervised emulation loss (Table 2)", "",
              f"Emulation loss of the emulator conditioned on z, on the validation and OOD networks "
              f"(lower is better; objective {results['objective']}).", ""]
    lines += emulation_table(results) + [""]

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
