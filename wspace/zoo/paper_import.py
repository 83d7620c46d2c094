"""Import a published zoo of the paper (Herrmann, Faccio, Schmidhuber, ICML 2024; the files of
its Zenodo record) into the wspace zoo format, after checking that its weights reproduce its
stored outputs.

A published zoo holds one row per snapshot, R = runs x snapshots, rows appended run after run in
increasing step order; N rollouts per row: ``parameters.npy`` (R, P) float32, the flat weights
of torch.nn.LSTM(batch_first) + nn.Linear in ``model.parameters()`` order (the layout of the
``lstm`` plugin), and the task family's own files. The task family reads them: it names the
files that mark its zoos (``TaskFamily.published_markers``) and reshapes them to wspace's
conventions (``TaskFamily.read_published``, giving a ``wspace_core.published.PublishedZoo``);
the layouts of the paper's two zoos are in ``wspace_formal_languages.published`` and
``wspace_tiled_mnist.published``. When ``--task`` is not given, the registered family whose
marker files the folder holds is the one.

Rollouts whose BOS the published code overwrote with EOS (``PublishedZoo.bos_eos``) get it back:
the zoo stores the token the network was fed, which the stored logits follow, and records how
many it restored (``build.restored_bos_rollouts``, shown by ``wspace zoo info``).

Splits: the published protocol (``wspace_core.splits``) over the zoo's networks, with the
published shares (validation 15 %, OOD 15 % of the unique tasks), by the family's
``split_zoo`` (its ``split_rule`` setting; pass ``split_rule=wspace`` in the task settings for
wspace's rule). Metric columns the published files do not hold are NaN.

Assumptions, each checked (a violation is refused with the file and rows named):
- A new network starts where the run id changes or the step does not increase; every network
  has the same snapshot steps, and its task is the same at all of them.
- The stored outputs are log-softmax or raw logits (``PublishedZoo.stored_kind``); the zoo stores
  log-probabilities (float16), as the families' rollouts do.
- Hidden size and layer count are inferred from P and the family's input/output sizes (give
  them when more than one architecture fits).

Check: the architecture is run on the stored inputs with the stored weights of every row
(``check="all"``; "sample": the first 8 rollouts of every row; "none": skip) and compared with
the stored outputs within float16 tolerance (|a - b| <= atol + rtol |b|). Rows whose weights are
not finite, or whose outputs do not match, are refused by row, run and step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from wspace_core.architecture import Architecture
from wspace_core.published import LoadFiles, PublishedZoo
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, TaskFamily
from wspace_core.validators import positive_int
from wspace.zoo.content import check_published
from wspace.zoo.files import check_npy, sha256_file
from wspace.zoo.manifest import MANIFEST_NAME, metadata_columns
from wspace.zoo.store import Zoo, ZooWriter

#: the published training script's split shares (train, eval_ratio, ood_ratio)
PUBLISHED_SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
_SAMPLE_ROLLOUTS = 8
_ELEMENTS_PER_BATCH = 1 << 24  # rows x rollouts x steps x 4H of one verification batch


def _load(src: Path, name: str) -> np.ndarray:
    path = src / name
    if not path.exists():
        raise WspaceError(f"{src} has no {name}; a published zoo folder holds "
                          f"parameters.npy, sequences.npy, logits.npy, tasks.npy and the task's metric files")
    check_npy(path)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _rows(arrays: dict[str, np.ndarray]) -> int:
    counts = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        listing = ", ".join(f"{n}: {c}" for n, c in counts.items())
        raise WspaceError(f"the published files disagree on the number of rows ({listing}); a file is "
                          f"truncated or from another zoo: re-download it")
    return next(iter(counts.values()))


def _loader(src: Path) -> LoadFiles:
    """``load(names)`` for a family's reader: the named files of ``src``, checked and memory-mapped,
    refused when missing or when they disagree on the number of rows."""
    def load(names: Sequence[str]) -> dict[str, np.ndarray]:
        arrays = {name: _load(src, name) for name in names}
        _rows(arrays)
        return arrays
    return load


def published_families() -> dict[str, type[TaskFamily]]:
    """The registered task families that read published zoos (``published_markers``), by name."""
    from wspace_core import plugins

    families = plugins.task_families()
    return {name: families.get(name) for name in families.names() if families.get(name).published_markers}


def detect_task(src: str | os.PathLike) -> str:
    """Which published zoo the folder ``src`` holds: the registered family whose marker files it holds."""
    src = Path(src)
    markers = {task: family.published_markers for task, family in published_families().items()}
    found = [task for task, files in markers.items() if all((src / f).exists() for f in files)]
    if len(found) != 1:
        listing = "; ".join(f"{t}: {', '.join(f)}" for t, f in markers.items())
        raise WspaceError(f"cannot tell which published zoo {src} holds (files that mark each: {listing}); "
                          f"give --task {' or '.join(markers)}")
    return found[0]


def rollout_inputs(data: PublishedZoo, rows, rollouts: int | None = None) -> np.ndarray:
    """The stored rollout inputs of ``rows`` (first ``rollouts`` of each), with the BOS that the
    published code overwrote restored: (r, N, T) tokens or (r, N, T, I) values."""
    inputs = np.array(data.inputs[rows] if rollouts is None else data.inputs[rows, :rollouts])
    if data.bos_eos is not None:
        bos, eos = data.bos_eos
        first = inputs[..., 0]
        first[first == eos] = bos  # checked on reading: only the overwrite starts with EOS
    return inputs


def _models(data: PublishedZoo) -> tuple[np.ndarray, list[int]]:
    """(R,) model index of every row and the common snapshot steps."""
    run, step = data.run.astype(np.int64), data.step.astype(np.int64)
    new = np.ones(len(run), dtype=bool)
    new[1:] = (run[1:] != run[:-1]) | (step[1:] <= step[:-1])
    model = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, len(run)))
    steps = step[: lengths[0]].tolist()
    bad = [m for m, (s, n) in enumerate(zip(starts, lengths)) if step[s:s + n].tolist() != steps]
    if bad:
        m = bad[0]
        raise WspaceError(f"network {m} (run {run[starts[m]]}, rows {starts[m]}..{starts[m] + lengths[m] - 1}) "
                          f"has snapshot steps {step[starts[m]:starts[m] + lengths[m]].tolist()}, the first has "
                          f"{steps}; every network must have the same snapshots ({len(bad)} differ)")
    for column, values in data.task_values.items():
        first = values[starts][model]
        differs = np.flatnonzero(~np.isclose(values, first, rtol=0, atol=1e-9))
        if differs.size:
            r = differs[0]
            raise WspaceError(f"the task ({column}) changes within run {run[r]} at row {r}; "
                              f"a network keeps one task at all its snapshots")
    return model, steps


def _rows_where(array: np.ndarray, test, rows_per_block: int = 256) -> np.ndarray:
    """Indices of the rows of a (memory-mapped) array where ``test`` is true anywhere, a block
    of rows at a time."""
    hits = []
    for start in range(0, array.shape[0], rows_per_block):
        block = np.asarray(array[start:start + rows_per_block])
        hits.append(start + np.flatnonzero(test(block).reshape(len(block), -1).any(axis=1)))
    return np.concatenate(hits) if hits else np.zeros(0, np.int64)


def _row_names(rows: np.ndarray, data: PublishedZoo) -> str:
    shown = ", ".join(f"{r} (run {int(data.run[r])} step {int(data.step[r])})" for r in rows[:10])
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def infer_sizes(arch_cls, num_params: int, input_size: int, output_size: int,
                hidden_size: int | None = None, num_layers: int | None = None):
    """The ``Sizes`` of ``arch_cls`` with ``num_params`` parameters (hidden size by bisection
    for each layer count); refuses none or several fits."""
    from wspace_core.architecture import Sizes

    def count(h: int, n: int) -> int:
        return arch_cls(Sizes(input_size, h, output_size, n)).layout.num_params

    fits = []
    for n in ([num_layers] if num_layers else range(1, 9)):
        if hidden_size:
            if count(hidden_size, n) == num_params:
                fits.append((hidden_size, n))
            continue
        lo, hi = 1, 4096
        while lo < hi:
            mid = (lo + hi) // 2
            if count(mid, n) < num_params:
                lo = mid + 1
            else:
                hi = mid
        if count(lo, n) == num_params:
            fits.append((lo, n))
    if not fits:
        raise WspaceError(f"no {arch_cls.name} with {input_size} inputs and {output_size} outputs has "
                          f"{num_params} parameters{'' if hidden_size is None else f' at hidden size {hidden_size}'}"
                          f"{'' if num_layers is None else f' with {num_layers} layers'}; is parameters.npy "
                          f"from this task? (give --hidden-size/--num-layers if the sizes are known)")
    if len(fits) > 1:
        listing = ", ".join(f"hidden {h} x {n} layers" for h, n in fits)
        raise WspaceError(f"{num_params} parameters fit several {arch_cls.name} sizes ({listing}); "
                          f"give --hidden-size and --num-layers")
    h, n = fits[0]
    return Sizes(input_size, h, output_size, n)


@torch.no_grad()
def check_outputs(arch, family: TaskFamily, data: PublishedZoo, rows: np.ndarray, check: str = "all") -> None:
    """Run ``arch`` with the stored weights of ``rows`` on their stored inputs and refuse rows
    whose stored outputs differ beyond float16 tolerance."""
    if check == "none" or len(rows) == 0:
        return
    N = data.inputs.shape[1] if check == "all" else min(_SAMPLE_ROLLOUTS, data.inputs.shape[1])
    T = data.inputs.shape[2]
    gates = 4 * arch.sizes.hidden_size * arch.sizes.num_layers
    per_batch = max(1, _ELEMENTS_PER_BATCH // max(1, N * T * gates))
    bad, worst = [], 0.0
    for start in range(0, len(rows), per_batch):
        batch = rows[start:start + per_batch]
        flat = torch.from_numpy(np.asarray(data.weights[batch], dtype=np.float32))  # (M, P)
        params = arch.layout.unflatten(flat)
        xs = family.network_inputs(torch.from_numpy(rollout_inputs(data, batch, N)))  # (M, N, T, I)
        computed, _ = arch.forward(params, xs.float())  # (M, N, T, O)
        if data.stored_kind == "log_softmax":
            computed = torch.log_softmax(computed, dim=-1)
        stored = torch.from_numpy(np.asarray(data.stored[batch, :N], dtype=np.float32))
        finite = torch.isfinite(stored)
        excess = (computed - stored).abs() - (data.atol + data.rtol * stored.abs())
        # a stored -inf is what float16 makes of a log-probability below its range
        excess = torch.where(finite, excess, torch.where(computed < -60000, -1.0, float("inf")))
        excess = excess.nan_to_num(nan=float("inf"))
        per_row = excess.flatten(1).amax(1)  # (M,)
        worst = max(worst, float(per_row.max()))
        bad += batch[(per_row > 0).numpy()].tolist()
    if bad:
        raise WspaceError(f"logits.npy does not match what parameters.npy computes on sequences.npy at rows "
                          f"{_row_names(np.asarray(bad), data)} (worst excess over the float16 tolerance: "
                          f"{worst:.3g}); the files are damaged or not from one zoo: re-download them")


def import_paper(src: str | os.PathLike, out: str | os.PathLike, task: str | None = None, *, arch: str = "lstm",
                 hidden_size: int | None = None, num_layers: int | None = None, chunk_size: int = 64,
                 check: str = "all", resume: bool = False,
                 task_settings: dict[str, Any] | None = None) -> Zoo:
    """Import the published zoo in folder ``src`` (task ``task``; None: read from the files) into a
    wspace zoo at ``out``."""
    src, out = Path(src), Path(out)
    task, family_cls = _published_family(src, task)
    if check not in ("all", "sample", "none"):
        raise WspaceError(f"check must be all, sample or none; got {check!r}")
    positive_int.require("chunk_size", chunk_size)
    if not src.is_dir():
        raise WspaceError(f"{src} is not a folder; point at the extracted published zoo")
    data = family_cls.read_published(_loader(src))
    family = family_cls(**{**data.settings, **(task_settings or {})})
    check_published(data, family)  # rows, token ids and metric ranges, before anything uses them
    _check_steps_and_values(data, family, task)
    model, steps = _models(data)
    architecture = _architecture(arch, data, family, hidden_size, num_layers)
    metadata = _metadata(data, family, task, model, len(steps))
    base = {"architecture": architecture.describe(), "task": family.describe(),
            "build": _build_record(data, family, arch, architecture, src, chunk_size, int(model[-1]) + 1),
            "snapshot_steps": steps, "num_models": int(model[-1]) + 1, "rows_per_model": len(steps),
            "metadata_columns": metadata_columns(family), "imported_from": str(src.resolve())}
    return _write_zoo(out, base, architecture, family, data, metadata, check, resume)


def _published_family(src: Path, task: str | None) -> tuple[str, type[TaskFamily]]:
    """The task name and family class of the published zoo in ``src`` (``task`` None: from its files)."""
    if task is None:
        if not src.is_dir():
            raise WspaceError(f"{src} is not a folder; point at the extracted published zoo")
        task = detect_task(src)
    families = published_families()
    if task not in families:
        raise WspaceError(f"the paper published zoos for {', '.join(families)}; got task {task!r}")
    return task, families[task]


def _check_steps_and_values(data: PublishedZoo, family: TaskFamily, task: str) -> None:
    """Refuse rollouts of another length than the family's, weights that are not finite floats,
    and NaN outputs."""
    T = data.inputs.shape[2]
    if family.sequence_length != T:
        raise WspaceError(f"the published rollouts have {T} steps but the {task} family takes "
                          f"{family.sequence_length}; pass matching task settings")
    if not np.issubdtype(data.weights.dtype, np.floating):
        raise WspaceError(f"parameters.npy holds {data.weights.dtype}; expected float32 weights")
    bad = _rows_where(data.weights, lambda block: ~np.isfinite(block))
    if bad.size:
        raise WspaceError(f"parameters.npy has NaN or infinite weights at rows {_row_names(bad, data)}; "
                          f"re-download it (or drop those networks before importing)")
    bad = _rows_where(data.stored, np.isnan)
    if bad.size:
        raise WspaceError(f"logits.npy has NaN outputs at rows {_row_names(bad, data)}; re-download it")


def _architecture(arch: str, data: PublishedZoo, family: TaskFamily, hidden_size: int | None,
                  num_layers: int | None) -> Architecture:
    """The ``arch`` plugin at the sizes the stored weights fit."""
    from wspace_core import plugins

    arch_cls = plugins.architectures().get(arch)
    sizes = infer_sizes(arch_cls, data.weights.shape[1], family.input_size, family.output_size,
                        hidden_size, num_layers)
    return arch_cls(sizes)


def _metadata(data: PublishedZoo, family: TaskFamily, task: str, model: np.ndarray, S: int) -> np.ndarray:
    """(R, C) metadata rows: model, snapshot, step, split, the task columns, the metric columns;
    splits by the family's ``split_zoo`` over the networks' tasks with the published shares."""
    num_models = int(model[-1]) + 1
    first_rows = np.arange(num_models) * S
    tasks = np.stack([data.task_values[c] for c in family.task_columns], axis=1)  # (R, K)
    split_names = family.split_zoo(torch.from_numpy(tasks[first_rows]), PUBLISHED_SPLIT_FRACTIONS)
    split_index = np.repeat(np.array([SPLITS.index(s) for s in split_names], dtype=np.float64), S)
    missing = [c for c in family.metric_columns if c not in data.metric_values]
    if missing:
        raise WspaceError(f"the published {task} zoo has no data for the family's metric columns {missing}")
    return np.stack([model.astype(np.float64), np.tile(np.arange(S), num_models).astype(np.float64),
                     data.step.astype(np.float64), split_index,
                     *(data.task_values[c] for c in family.task_columns),
                     *(data.metric_values[c] for c in family.metric_columns)], axis=1)  # (R, C)


def _build_record(data: PublishedZoo, family: TaskFamily, arch: str, architecture: Architecture, src: Path,
                  chunk_size: int, num_models: int) -> dict[str, Any]:
    """The manifest's ``build`` entry of an import (part of the zoo's fingerprint)."""
    return {"source": "published", "task_settings": family.settings(), "arch": arch,
            "hidden_size": architecture.sizes.hidden_size, "num_layers": architecture.sizes.num_layers,
            "num_models": num_models, "chunk_size": chunk_size, "num_rollouts": int(data.inputs.shape[1]),
            "split_fractions": list(PUBLISHED_SPLIT_FRACTIONS), "restored_bos_rollouts": data.restored_bos,
            "source_sha256": {name: sha256_file(src / name) for name in data.files}}


def _write_zoo(out: Path, base: dict[str, Any], architecture: Architecture, family: TaskFamily,
               data: PublishedZoo, metadata: np.ndarray, check: str, resume: bool) -> Zoo:
    """Check the stored outputs (of the chunks still to write, when resuming), then write the
    zoo chunk by chunk."""
    S = base["rows_per_model"]
    resuming = resume and (out / MANIFEST_NAME).exists()
    if not resuming:  # refuse inconsistent files before anything is written
        check_outputs(architecture, family, data, np.arange(len(metadata)), check)
    with ZooWriter.create(out, base, resume=resume) as writer:
        pending = writer.pending_chunks()
        if resuming:
            rows = [np.arange(writer.chunk_models(c).start * S, writer.chunk_models(c).stop * S) for c in pending]
            check_outputs(architecture, family, data, np.concatenate(rows or [np.zeros(0, np.int64)]), check)
        for chunk_id in pending:
            models = writer.chunk_models(chunk_id)
            rows = slice(models.start * S, models.stop * S)
            outputs = np.asarray(data.stored[rows])
            if data.stored_kind == "logits":
                outputs = torch.log_softmax(torch.from_numpy(outputs.astype(np.float32)), dim=-1).numpy()
            writer.commit_chunk(chunk_id, {"weights": np.asarray(data.weights[rows], dtype=np.float32),
                                           "rollout_inputs": rollout_inputs(data, rows),
                                           "rollout_outputs": outputs, "metadata": metadata[rows]})
        return writer.finalize()
