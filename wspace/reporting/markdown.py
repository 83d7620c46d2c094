"""report.md rendered from the results dictionary that ``wspace.experiment.compare.compare``
builds (and writes as results.json): one function per section, each number read from the
results, figures linked relative to the report directory."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from wspace_core.heads import higher_is_better
from wspace.reporting import paper
from wspace.reporting.claims import table2_metric
from wspace.reporting.plots import PathLike
from wspace.reporting.roles import baseline_of, encoder_role, is_baseline, paper_zoo
from wspace.reporting.statistics import fmt_interval

SPLITS = ("validation", "ood")
SETTINGS = ("frozen", "supervised")


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


def _kind(results: Mapping, encoder: str) -> str:
    return "baseline" if is_baseline(encoder) else results["kinds"].get(encoder, "")


def paper_table2(results: Mapping) -> list[str]:
    """Table 2 in the paper's form: each encoder's emulation loss as the published code computes it
    (``table2_metric``), with the paper's figure beside it (``wspace.reporting.paper.TABLE_2``, by
    the task family's paper zoo and the encoder's role; "–" where none is recorded)."""
    metric = table2_metric(results)
    zoo = paper_zoo(results["task"])
    comparable = metric == paper.TABLE_2_METRIC  # the paper's figures sit beside that metric only
    header = ["encoder", "kind"] + [c for split in SPLITS
                                    for c in ((f"{split} {metric}", f"paper {split}") if comparable
                                              else (f"{split} {metric}",))]
    rows = []
    for enc in results["encoders"]:
        entry = results["emulation"].get(enc)
        if not entry:
            continue
        row = [enc, _kind(results, enc)]
        for split in SPLITS:
            figure = paper.TABLE_2.get((zoo, encoder_role(enc), split))
            row.append(fmt_interval(entry[split].get(metric)))
            if comparable:
                row.append("–" if figure is None else f"{figure:g}")
        rows.append(row)
    return _table(header, rows)


def emulation_table(results: Mapping) -> list[str]:
    """Every emulation metric (the trained objective's first) of every encoder, on both splits."""
    objective = results.get("objective_metric", results["objective"])
    metrics = [objective] + [m for m in results.get("emulation_metrics", []) if m != objective]
    header = ["encoder", "kind"] + [f"{split} {m}" for m in metrics for split in SPLITS]
    rows = [[enc, _kind(results, enc)] + [fmt_interval(results["emulation"][enc][split].get(m))
                                          for m in metrics for split in SPLITS]
            for enc in results["encoders"] if results["emulation"].get(enc)]
    return _table(header, rows)


def _downstream_label(encoder: str) -> str:
    return f"{encoder} (chance: z carries nothing)" if is_baseline(encoder) else encoder


def details_table(entry: Mapping) -> list[str]:
    """The head's other figures (e.g. each offset's accuracy): one row per encoder and setting."""
    details = entry.get("details") or {}
    metrics = sorted({m for d in details.values() for splits in d.values() for ms in splits.values() for m in ms})
    if not metrics:
        return []
    columns = [(m, split) for m in metrics for split in SPLITS]
    rows = []
    for enc, by_setting in details.items():
        for setting, splits in by_setting.items():
            rows.append([_downstream_label(enc), "pretrained" if setting == "frozen" else setting]
                        + [fmt_interval(splits.get(split, {}).get(m), 3) for m, split in columns])
    return ["", "Other figures of the same heads:", ""] + _table(
        ["encoder", "setting"] + [f"{m} {split}" for m, split in columns], rows)


# ---- the sections of report.md, in order --------------------------------------------------------


def _workers_text(workers: int) -> str:
    return f", {workers} child runs at a time (single-threaded worker processes)" if workers > 1 else ""


def header_section(results: Mapping) -> list[str]:
    """Title, command, versions, the zoo, encoders and seeds, notes, the MLflow parent run."""
    z, v, seeds = results["zoo"], results["versions"], results["seeds"]
    splits = ", ".join(f"{k} {n}" for k, n in z["rows_per_split"].items())
    baseline = baseline_of(results["encoders"])
    lines = [f"# wspace comparison: {results['arch']} networks on {results['task']} ({results['preset']} preset)",
             "",
             f"Command: `{results['command']}`", "",
             f"Versions: wspace {v['wspace']}, torch {v['torch']}, Python {v['python']}; device {results['device']}. "
             f"Wall time {results['seconds'] / 60:.1f} min{_workers_text(results.get('workers', 1))}.", "",
             f"Zoo: `{z['path']}` — fingerprint `{z['fingerprint']}`, {z['num_models']} networks × "
             f"{z['rows_per_model']} snapshot(s) = {z['num_rows']} rows ({splits}), "
             f"{z['num_params']} parameters per network.", "",
             f"Encoders: {', '.join(e for e in results['encoders'] if e != baseline)}; baseline {baseline or 'none'}. "
             f"Seeds: {', '.join(map(str, seeds))} ({len(seeds)}). Figures are mean [95% percentile-bootstrap "
             f"interval of the mean over seeds]" + (" (one seed: the value itself)." if len(seeds) == 1 else "."),
             ""]
    for note in results.get("notes", []):
        lines += [f"Note: {note}", ""]
    if results.get("mlflow", {}).get("parent_run_id"):
        lines += [f"MLflow: parent run `{results['mlflow']['parent_run_id']}` "
                  f"({results['mlflow'].get('tracking') or 'tracking store'}), one child run per encoder and seed.", ""]
    return lines


def ordering_section(results: Mapping) -> list[str]:
    """Each claim of the paper with its verdict (``wspace.reporting.claims.ordering_vs_paper``)."""
    lines = ["## Ordering vs the paper", "",
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
    return lines + [""]


def emulation_section(results: Mapping) -> list[str]:
    """Table 2 in the paper's form, then every emulation metric with its description."""
    info = results.get("metric_info", {})
    metric = table2_metric(results)
    objective = results.get("objective_metric", results["objective"])
    published = metric == paper.TABLE_2_METRIC
    description = f" — {info[metric]['description']}" if metric in info and info[metric].get("description") else ""
    lines = ["## Self-supervised emulation loss (Table 2)", "",
             f"Emulation loss of the emulator conditioned on z, on the validation and OOD networks (lower is "
             f"better). Trained objective: {results['objective']} over "
             f"{results.get('loss_positions', 'masked')} rollout positions (reported as {objective}).", "",
             ("In the paper's form: " if published else "Headline metric: ") + metric + description
             + (". \"paper\": the figure in the paper's Table 2 (`wspace/reporting/paper.py`; – where none is recorded)."
                if published else
                f". These results hold no {paper.TABLE_2_METRIC} (written before wspace reported the published "
                f"code's metric), so the paper's figures are not shown beside them."),
             ""]
    lines += paper_table2(results) + [""]
    lines += ["Every metric:", ""]
    lines += emulation_table(results) + [""]
    if info:
        lines += [f"- `{name}`: {i.get('description') or i.get('objective')}" for name, i in info.items()] + [""]
    return lines


def downstream_section(results: Mapping, root: Path) -> list[str]:
    """Per property: the headline figure of every encoder, pretrained and supervised, the head's
    other figures, and the bar plot."""
    if not results.get("downstream"):
        return []
    lines = ["## Downstream property prediction (Fig. 8/18/19)", "",
             "Pretrained: the frozen encoder's z with a trained head. Supervised: the same encoder "
             "architecture trained end to end with the head"
             + (" (skipped: --skip-supervised)." if results.get("skip_supervised") else ".")
             + " Heads train on the training networks plus half of the OOD networks and are scored on the "
               "validation networks and the other OOD half.", ""]
    for prop, entry in results["downstream"].items():
        metric = entry["metric"]
        arrow = "higher" if higher_is_better(metric) else "lower"
        lines += [f"### {prop} ({metric}, {arrow} is better)", ""]
        rows = [[_downstream_label(enc)] + [fmt_interval(settings.get(s, {}).get(split), 3)
                                            for s in SETTINGS for split in SPLITS]
                for enc, settings in entry["encoders"].items()]
        lines += _table(["encoder", "pretrained validation", "pretrained ood", "supervised validation",
                         "supervised ood"], rows)
        lines += details_table(entry)
        plot = results["plots"].get("downstream", {}).get(prop)
        if plot:
            lines += ["", f"![{prop}]({_rel(plot, root)})"]
        lines += [""]
    return lines


def fidelity_section(results: Mapping, root: Path) -> list[str]:
    """Each encoder's emulation fidelity: correlation and mean performances, with its scatter plot."""
    if not results.get("fidelity"):
        return []
    lines = ["## Emulation fidelity (Fig. 5/14)", "",
             "Each validation network's performance against the performance of its emulation (the "
             "emulator conditioned on its z), scored by the task family in the same way.", ""]
    rows = []
    for enc, entry in results["fidelity"].items():
        plot = results["plots"].get("fidelity", {}).get(enc)
        rows.append([enc, fmt_interval(entry["correlation"], 3), fmt_interval(entry["original_mean"], 3),
                     fmt_interval(entry["emulated_mean"], 3),
                     f"[scatter]({_rel(plot, root)})" if plot else ""])
    lines += _table(["encoder", "correlation", "original performance", "emulated performance", "plot"], rows)
    return lines + [""]


def permutation_section(results: Mapping) -> list[str]:
    """The hidden-neuron permutation table: correct and incomplete permutations, every one folded."""
    perm = results.get("permutation")
    if not perm:
        return []
    lines = ["## Hidden-neuron permutations (Fig. 16/17)", "",
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
    return lines + ["", "</details>", ""]


def embedding_section(results: Mapping, root: Path) -> list[str]:
    """Links to the PCA plots of z and the raw-weight plots, by task and by performance."""
    plots = results.get("plots", {})
    if not (plots.get("embeddings") or plots.get("raw_weights")):
        return []
    lines = ["## Embeddings (Fig. 6/7/20–22)", "",
             f"PCA of z of the validation networks (seed {results['seeds'][0]}), coloured by task and by "
             "performance; the raw flattened weights for contrast.", ""]
    named = dict(plots.get("embeddings", {}))
    if plots.get("raw_weights"):
        named["raw weights"] = plots["raw_weights"]
    rows = [[name, f"[by task]({_rel(p['task'], root)})", f"[by performance]({_rel(p['performance'], root)})"]
            for name, p in named.items()]
    return lines + _table(["representation", "coloured by task", "coloured by performance"], rows) + [""]


def probes_section(results: Mapping, root: Path) -> list[str]:
    """The probing encoders' inputs (heatmaps)."""
    probes = results.get("plots", {}).get("probes")
    if not probes:
        return []
    lines = ["## Probing inputs (Fig. 15)", "",
             f"The inputs the trained probing encoders (seed {results['seeds'][0]}) sent to a few validation "
             "networks: one row per network, one column per parallel probe, input token × probing step.", ""]
    for enc, path in probes.items():
        lines += [f"![{enc} probes]({_rel(path, root)})", ""]
    return lines


def closing_section(results: Mapping, root: Path) -> list[str]:
    """The pretraining curves, then what the report directory holds."""
    curves = results.get("plots", {}).get("loss_curves")
    lines = ["## Pretraining curves", "", f"![validation emulation loss]({_rel(curves, root)})", ""] if curves else []
    return lines + ["## Files", "", "- `results.json`: every number above, per seed and aggregated.",
                    "- `plots/`: the figures.", ""]


def render_markdown(results: Mapping, report_dir: PathLike) -> str:
    """report.md: readable on its own, every figure taken from ``results``."""
    root = Path(report_dir)
    lines = (header_section(results) + ordering_section(results) + emulation_section(results)
             + downstream_section(results, root) + fidelity_section(results, root) + permutation_section(results)
             + embedding_section(results, root) + probes_section(results, root) + closing_section(results, root))
    return "\n".join(lines)
