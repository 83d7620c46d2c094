"""Figures over seeds: a mean with its percentile-bootstrap interval, stored as results.json
writes it, and written as report.md prints it ("mean [low, high]")."""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np


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
