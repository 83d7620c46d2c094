"""Every figure of a report: embeddings of z (PCA), of raw weights (t-SNE or PCA), emulation
fidelity (the paper's Fig. 5), loss curves, the probing encoders' inputs (Fig. 15) and downstream
bars with bootstrap error bars (Fig. 8). Each function writes one PNG and returns its path.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``), so nothing
here touches pyplot's global state or the backend the rest of a program uses.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PathLike = str | os.PathLike
#: Up to this many distinct labels get a legend with one colour each.
MAX_LEGEND_LABELS = 20


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components by SVD of the centred data.

    x: (N, D) -> coords (N, k), components (k, D) orthonormal rows, explained variance ratio (k,).
    Signs are fixed (each component's largest loading is positive) so results are reproducible.
    Fewer than k available dimensions are padded with zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)  # (N, D)
    centred = x - x.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(N, D), D)
    flip = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
    vt = vt * np.where(flip == 0, 1.0, flip)[:, None]
    variance = s**2
    ratio = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    components = np.zeros((k, x.shape[1]))
    explained = np.zeros(k)
    n = min(k, vt.shape[0])
    components[:n], explained[:n] = vt[:n], ratio[:n]
    return centred @ components.T, components, explained


def _figure(size: tuple[float, float] = (6.0, 5.0)) -> Figure:
    fig = Figure(figsize=size, dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _is_categorical(color: np.ndarray) -> bool:
    return not np.issubdtype(color.dtype, np.number) or color.dtype == bool


def _scatter(ax, xy: np.ndarray, color: Sequence | np.ndarray | None, color_label: str,
             categorical: bool | None) -> None:
    """Scatter xy (N, 2): one legend entry per label, or a colour bar for numeric values."""
    if color is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.8)
        return
    color = np.asarray(color)
    if len(color) != len(xy):
        raise ValueError(f"color has {len(color)} entries for {len(xy)} points")
    if categorical is None:
        categorical = _is_categorical(color)
    if categorical:
        labels, index = np.unique(color.astype(str), return_inverse=True)
        if len(labels) <= MAX_LEGEND_LABELS:
            palette = _palette(len(labels))
            for i, label in enumerate(labels):
                pts = xy[index == i]
                ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.8, color=palette[i], label=label)
            ax.legend(title=color_label, fontsize="small", markerscale=1.5,
                      loc="center left", bbox_to_anchor=(1.02, 0.5))
            return
        color = index  # too many labels for a legend: colour by label index
    points = ax.scatter(xy[:, 0], xy[:, 1], c=color.astype(np.float64), s=10, alpha=0.8, cmap="viridis")
    ax.figure.colorbar(points, ax=ax, label=color_label)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]


def embedding_plot(z: np.ndarray, color: Sequence | np.ndarray | None, title: str, path: PathLike,
                   color_label: str = "", categorical: bool | None = None) -> Path:
    """2-D PCA of representations z (N, Z), coloured by ``color`` (N,): labels (e.g. the task)
    get a legend, numbers (e.g. performance) a colour bar; ``categorical`` overrides the guess."""
    xy, _, explained = pca(z, 2)
    fig = _figure()
    ax = fig.add_subplot()
    _scatter(ax, xy, color, color_label, categorical)
    ax.set(title=title, xlabel=f"PC 1 ({explained[0]:.0%} of variance)",
           ylabel=f"PC 2 ({explained[1]:.0%} of variance)")
    return _save(fig, path)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray | None:
    """t-SNE of x (N, D) after PCA to at most 50 dimensions; None if scikit-learn is missing."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return None
    n = x.shape[0]
    reduced = pca(x, min(50, n, x.shape[1]))[0]  # (N, ≤50)
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def tsne_or_pca_plot(x: np.ndarray, color: Sequence | np.ndarray | None, title: str, path: PathLike,
                     color_label: str = "", method: str = "auto", seed: int = 0,
                     categorical: bool | None = None) -> Path:
    """2-D embedding of raw (e.g. flattened-weight) vectors x (N, D): t-SNE where scikit-learn
    is installed (``method="auto"`` or ``"tsne"``), else PCA; the title says which was used."""
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"method must be 'auto', 'tsne' or 'pca', not {method!r}")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    xy = _tsne(x, seed) if method != "pca" and len(x) >= 5 else None
    used = "t-SNE" if xy is not None else "PCA"
    if xy is None:
        xy = pca(x, 2)[0]
    fig = _figure()
    ax = fig.add_subplot()
    _scatter(ax, xy, color, color_label, categorical)
    ax.set(title=f"{title} ({used})", xlabel=f"{used} 1", ylabel=f"{used} 2")
    return _save(fig, path)


def fidelity_plot(original_perf: Sequence[float] | np.ndarray, emulated_perf: Sequence[float] | np.ndarray,
                  path: PathLike, title: str = "Emulation fidelity") -> Path:
    """Performance of each original network against its emulation, with the diagonal where the
    two agree (as the paper's Fig. 5)."""
    orig = np.asarray(original_perf, dtype=np.float64).ravel()
    emul = np.asarray(emulated_perf, dtype=np.float64).ravel()
    if orig.shape != emul.shape:
        raise ValueError(f"{orig.size} original and {emul.size} emulated performances")
    fig = _figure((5.0, 5.0))
    ax = fig.add_subplot()
    finite = np.isfinite(orig) & np.isfinite(emul)
    lo = min(orig[finite].min(), emul[finite].min()) if finite.any() else 0.0
    hi = max(orig[finite].max(), emul[finite].max()) if finite.any() else 1.0
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", linestyle="--", linewidth=1,
            label="emulation = original")
    label = f"networks (n={finite.sum()})"
    if finite.sum() > 1 and orig[finite].std() > 0 and emul[finite].std() > 0:
        label += f", r = {np.corrcoef(orig[finite], emul[finite])[0, 1]:.3f}"
    ax.scatter(orig, emul, s=10, alpha=0.7, label=label)
    ax.set(title=title, xlabel="original network performance", ylabel="emulated performance",
           xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal")
    ax.legend(fontsize="small", loc="upper left")
    return _save(fig, path)


Series = Sequence[float] | np.ndarray | tuple[Sequence[float], Sequence[float]]


def loss_curve_plot(series: Mapping[str, Series], path: PathLike, title: str = "",
                    ylabel: str = "loss", xlabel: str = "step", log_y: bool | None = None) -> Path:
    """Curves by name: each a sequence of values (at steps 0, 1, ...) or a (steps, values) pair.
    ``log_y`` None: logarithmic when all values are positive and span over two decades."""
    fig = _figure((6.5, 4.0))
    ax = fig.add_subplot()
    everything = []
    for name, data in series.items():
        if isinstance(data, tuple) and len(data) == 2 and np.ndim(data[0]) == 1:
            steps, values = np.asarray(data[0], dtype=np.float64), np.asarray(data[1], dtype=np.float64)
        else:
            values = np.asarray(data, dtype=np.float64).ravel()
            steps = np.arange(len(values), dtype=np.float64)
        ax.plot(steps, values, label=name, linewidth=1.2)
        everything.append(values[np.isfinite(values)])
    values = np.concatenate(everything) if everything else np.zeros(0)
    if log_y is None:
        log_y = values.size > 0 and values.min() > 0 and values.max() / values.min() > 100
    if log_y:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if series:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


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
