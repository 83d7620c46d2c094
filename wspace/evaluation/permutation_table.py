"""The hidden-neuron permutation table (the paper's Fig. 16/17): how far a representation moves
when a network's hidden neurons are permuted, relative to how far it is from another network.

For M networks θ_i of a zoo split (snapshots of its models, evenly picked), θ̂_i = π_i(θ_i) with
π_i a random permutation of every neuron group, and ψ_i a network of another model of the split::

    ratio = mean_i ‖E(θ̂_i) − E(θ_i)‖ / mean_i ‖E(ψ_i) − E(θ_i)‖

(a ratio of means: robust when a pair happens to lie close together). About 0: E does not see
the permutation; about 1 or more: the permutation moves E as far as a different network does.

Columns: the *correct* permutation (every axis of every group moves: the function is unchanged)
and each *incomplete* one, which leaves out one (group, axis) of ``symmetry.all_axes()`` (the
function changes in general). Reference rows: E = the network's outputs on θ_i's stored rollout
inputs (function space; log-probabilities for categorical outputs, masked as the task masks
rollouts) and E = the flat weight vector (weight space).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from wspace_core.architecture import Params
from wspace_core.encoder import Encoder
from wspace.training.pretrain import ZooSplit, embed
from wspace_core.registry import WspaceError
from wspace_core.symmetry import PermutedAxis

FUNCTION_ROW = "function (outputs on rollout inputs)"
WEIGHTS_ROW = "weights (flattened θ)"
CORRECT = "correct"

Representation = Callable[[Params], torch.Tensor]  # params {name: (M, *shape)} -> (M, D)


def incomplete_name(axis: PermutedAxis) -> str:
    """Column name of the incomplete permutation that leaves ``axis`` out."""
    blocks = f", {axis.blocks} blocks" if axis.blocks > 1 else ""
    return f"without {axis.param} axis {axis.axis}{blocks}"


def pick_networks(zoo, split: str, num_networks: int, snapshot: int | None = None) -> tuple[np.ndarray, str]:
    """Up to ``num_networks`` rows of ``split`` (of one ``snapshot``, or all), evenly spread;
    from every split ("all") when ``split`` holds fewer than 2 networks."""
    rows = np.asarray(zoo.rows(split=split, snapshot=snapshot))
    models = np.unique(zoo.metadata["model"][rows])
    if len(models) < 2:
        split, rows = "all", np.asarray(zoo.rows(snapshot=snapshot))
        models = np.unique(zoo.metadata["model"][rows])
    if len(models) < 2:
        raise WspaceError(f"zoo {zoo.path} has fewer than 2 networks; the permutation table compares "
                          f"pairs of networks: build a zoo with more models (--zoo-models)")
    pick = np.linspace(0, len(rows) - 1, num=min(num_networks, len(rows))).round().astype(int)
    return rows[np.unique(pick)], split


def partners(models: np.ndarray) -> np.ndarray:
    """For each position i, the position of another network ψ_i: half the list away (rows are in
    (model, snapshot) order, so that is another model), moving on until the model differs."""
    M = len(models)
    out = np.empty(M, dtype=np.int64)
    for i in range(M):
        for step in range(M):
            j = (i + M // 2 + step) % M
            if models[j] != models[i]:
                out[i] = j
                break
        else:
            raise WspaceError("the permutation table needs networks of at least 2 different models")
    return out


def _ratio(rep: Representation, moved: Params, reference: tuple[torch.Tensor, torch.Tensor]) -> float:
    e_theta, e_psi = reference
    moved_dist = (rep(moved) - e_theta).norm(dim=1)  # (M,)
    other_dist = (e_psi - e_theta).norm(dim=1)  # (M,)
    denominator = other_dist.mean().item()
    if denominator == 0.0:
        return float("nan")  # E maps every network to the same point (e.g. no information)
    return moved_dist.mean().item() / denominator


@torch.no_grad()
def permutation_table(zoo, encoders: Mapping[str, Encoder], *, split: str = "validation",
                      num_networks: int = 32, num_rollouts: int = 4, seed: int = 0,
                      device: str = "cpu") -> dict:
    """The table as plain data::

        {"columns": ["correct", "without ... axis ...", ...],
         "rows": {row name: {column: ratio}}, "networks": M, "split": split, "seed": seed}

    Rows: the two references (``FUNCTION_ROW``, ``WEIGHTS_ROW``), then one per entry of
    ``encoders`` (name -> encoder, e.g. "dwsnet (trained)"). Every representation sees the same
    M networks, permutations and pairs; each is computed for all M networks in one call.
    """
    device_t = torch.device(device)
    rows, split = pick_networks(zoo, split, num_networks)
    data = ZooSplit(zoo, "train" if split == "all" else split, device_t)  # serves any rows
    params, inputs, _, mask = data.batch(rows, None, num_rollouts)  # inputs (M, N, T, I)
    arch, task = data.arch, data.task
    symmetry = arch.symmetry
    M = len(rows)
    generator = torch.Generator().manual_seed(seed)
    perms = symmetry.random_permutations(M, generator, device=device_t)
    axes = symmetry.all_axes()
    variants: dict[str, Params] = {CORRECT: symmetry.apply(params, perms)}
    for left_out in axes:
        variants[incomplete_name(left_out[1])] = symmetry.apply(
            params, perms, only=[a for a in axes if a != left_out])
    partner = torch.from_numpy(partners(zoo.metadata["model"][rows])).to(device_t)
    other = {name: value[partner] for name, value in params.items()}  # ψ_i: another model's network

    def function(p: Params) -> torch.Tensor:
        ys, _ = arch.forward(p, inputs)  # (M, N, T, O) on θ's rollout inputs, for every p
        if task.output_kind == "categorical":
            ys = ys.log_softmax(-1)
        if mask is not None:
            ys = ys * mask.unsqueeze(-1)
        return ys.flatten(1)

    representations: dict[str, Representation] = {
        FUNCTION_ROW: function,
        WEIGHTS_ROW: arch.layout.flatten,
    }
    for name, encoder in encoders.items():
        representations[name] = _encoder_representation(encoder, data)

    table = {}
    for name, rep in representations.items():
        reference = (rep(params), rep(other))
        table[name] = {column: _ratio(rep, moved, reference)
                       for column, moved in variants.items()}
    return {"columns": list(variants), "rows": table, "networks": int(M), "split": split,
            "seed": seed, "num_rollouts": int(inputs.shape[1])}


def _encoder_representation(encoder: Encoder, data: ZooSplit) -> Representation:
    def represent(p: Params) -> torch.Tensor:
        was_training = encoder.training
        encoder.eval()
        try:
            return embed(encoder, data, p)  # (M, Z)
        finally:
            encoder.train(was_training)
    return represent


def incomplete_summary(row: Mapping[str, float]) -> dict[str, float]:
    """mean, min and max of a row's incomplete-permutation ratios."""
    values = np.array([v for k, v in row.items() if k != CORRECT], dtype=np.float64)
    if values.size == 0 or np.isnan(values).all():
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(np.nanmean(values)), "min": float(np.nanmin(values)),
            "max": float(np.nanmax(values))}
