"""Emulation fidelity (the paper's Fig. 5): how well the emulator conditioned on a network's z
performs the network's task, against how well the network itself does."""

from __future__ import annotations

import numpy as np
import torch

from wspace.evaluation.embeddings import split_embeddings
from wspace.training.emulation import EmulatorArchitecture
from wspace.training.pretrain import PretrainResult


@torch.no_grad()
def emulation_fidelity(result: PretrainResult, zoo, split: str, device: str, max_networks: int = 48,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Original performance vs the emulation's performance, the task family scoring the emulator
    conditioned on each network's z exactly as it scored the network. Returns rows, original and
    emulated, each (N,) for N ≤ ``max_networks`` networks spread over the split."""
    rows, z = split_embeddings(result.encoder, zoo, split, device)
    pick = np.linspace(0, len(rows) - 1, num=min(max_networks, len(rows))).round().astype(int)
    rows, z = rows[pick], z[pick]
    task, arch = zoo.task_family(), zoo.architecture()
    meta = zoo.metadata
    tasks = torch.tensor(np.stack([meta[c][rows] for c in task.task_columns], axis=1), dtype=torch.float64)
    emulated = EmulatorArchitecture(result.emulator.eval(), arch.sizes)
    generators = [torch.Generator().manual_seed(seed * 1_000_003 + int(r)) for r in rows]
    metrics = task.evaluate(emulated, {"z": torch.from_numpy(z).to(device)}, tasks, generators)
    result.emulator.train()
    first = task.metric_columns[0]
    return {"rows": rows, "original": meta[first][rows], "emulated": metrics[first].cpu().numpy()}


#: the networks whose emulation is judged on its own: those this good at their own task (a
#: network that fails its task cannot show whether its emulation reproduces what it does)
GOOD_PERFORMANCE = 0.8


def fidelity_summary(fidelity: dict[str, np.ndarray], good: float = GOOD_PERFORMANCE) -> dict:
    """The figures of a fidelity: mean original and emulated performance and their correlation
    over the scored networks, and ``good``: the same means over the networks performing at ≥
    ``good`` (NaN when there are none) with their mean ratio emulated / original."""
    original = np.asarray(fidelity["original"], dtype=float)
    emulated = np.asarray(fidelity["emulated"], dtype=float)
    keep = original >= good
    picked = keep.any()
    return {"original_mean": float(np.mean(original)), "emulated_mean": float(np.mean(emulated)),
            "correlation": pearson(original, emulated), "networks": int(len(original)),
            "good": {"threshold": float(good), "networks": int(keep.sum()),
                     "original_mean": float(original[keep].mean()) if picked else float("nan"),
                     "emulated_mean": float(emulated[keep].mean()) if picked else float("nan"),
                     "ratio_mean": float((emulated[keep] / original[keep]).mean()) if picked else float("nan")}}


def pearson(a, b) -> float:
    """Pearson's correlation of two sequences; NaN when either is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
