"""Import a published zoo of the paper (Herrmann, Faccio, Schmidhuber, ICML 2024; the files of
its Zenodo record) into the wspace zoo format, after checking that its weights reproduce its
stored outputs.

Published layout (one row per snapshot, R = runs x snapshots, rows appended run after run in
increasing step order; N rollouts per row):

    parameters.npy   (R, P) float32  flat weights of torch.nn.LSTM(batch_first) + nn.Linear in
                                     ``model.parameters()`` order: the layout of the ``lstm`` plugin
    tasks.npy        formal_languages: (R, 4) int [0, mb, mc, md];  tiled_mnist: (R, 1) angle (deg)
    formal_languages:
      sequences.npy        (R, N, T+1) int16, BOS first, then the T tokens the network sampled
      logits.npy           (R, N, T, 6) float16 log-softmax; step t follows input token t
      num_step_correct.npy (R, 3) [run, step, correct strings of 1000]
    tiled_mnist:
      sequences.npy        (R, N, T, 16) float16 network inputs (a zero BOS tile, then 49 tiles)
      logits.npy           (R, N, T, 10) float16 raw outputs (not normalised)
      num_step.npy         (R, 2) [run, step]
      accuracy_losses.npy  (R, 4) [eval accuracy, train loss, eval loss, weight decay]

The published ``accept_sequence`` writes EOS, in place, over position 0 (BOS) of every rollout
that holds no EOS (it marks "the first EOS" of a string without one at index 0), and the files store
the rollouts after that: such rows start with EOS and hold no other EOS. The import restores their
BOS (the token the network was fed, which the stored logits follow) and records how many rollouts
it restored (``build.restored_bos_rollouts``, shown by ``wspace zoo info``). A first token that is
neither BOS nor such an overwritten BOS is refused as damage.

Splits: the published protocol (``wspace_core.splits``) over the zoo's networks, with the
published shares (validation 15 %, OOD 15 % of the unique tasks), by the family's
``split_zoo`` (its ``split_rule`` setting; pass ``split_rule=wspace`` in the task settings for
wspace's rule). Metric columns the published files do not hold (``performance_strict``: the
published zoo counts correct strings by its own rule only) are NaN.

The task family is read from the files when not given: ``num_step_correct.npy`` is a
formal-languages zoo, ``num_step.npy`` with ``accuracy_losses.npy`` a tiled-MNIST zoo.

Assumptions, each checked (a violation is refused with the file and rows named):
- A new network starts where the run id changes or the step does not increase; every network
  has the same snapshot steps, and its task is the same at all of them.
- formal_languages: the network's inputs are ``sequences[..., :T]`` (the last sampled token is
  never fed back, so it is not stored); the family gets ``sequence_tokens = T + 1``; performance
  is correct / 1000 (the paper's 1000 evaluation strings); tokens use the family's indices
  (a, b, c, d, BOS=4, EOS=5, as the published code).
- tiled_mnist: the stored outputs are raw logits; the zoo stores their log-softmax (float16),
  as the family's rollouts do. gap = eval loss - train loss; weight_decay is a task column.
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
from typing import Any, Callable

import attrs
import numpy as np
import torch

from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, TaskFamily
from wspace.zoo.content import check_published
from wspace.zoo.files import check_npy, sha256_file
from wspace.zoo.manifest import MANIFEST_NAME
from wspace.zoo.store import Zoo, ZooWriter

PAPER_TASKS = ("formal_languages", "tiled_mnist")
EVAL_STRINGS = 1000  # the published formal-languages zoo counts correct strings out of 1000
#: the published training script's split shares (train, eval_ratio, ood_ratio)
PUBLISHED_SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
#: the file that tells each published zoo apart (``detect_task``)
_MARKER_FILES = {"formal_languages": ("num_step_correct.npy",),
                 "tiled_mnist": ("num_step.npy", "accuracy_losses.npy")}
_SAMPLE_ROLLOUTS = 8
_ELEMENTS_PER_BATCH = 1 << 24  # rows x rollouts x steps x 4H of one verification batch


@attrs.frozen(eq=False)
class PaperData:
    """One published zoo, read (memory-mapped) and reshaped to wspace's conventions; R rows."""

    weights: np.ndarray  # (R, P) float32
    inputs: np.ndarray  # (R, N, T) int16 tokens or (R, N, T, I) float16
    stored: np.ndarray  # (R, N, T, O) float16 outputs as published (compared with the check)
    stored_kind: str  # "log_softmax" or "logits"
    run: np.ndarray  # (R,)
    step: np.ndarray  # (R,)
    task_values: dict[str, np.ndarray]  # task column -> (R,)
    metric_values: dict[str, np.ndarray]  # metric column -> (R,)
    settings: dict[str, Any]  # family settings implied by the data
    files: tuple[str, ...]
    atol: float
    rtol: float
    #: (BOS, EOS) token ids when rollouts may carry the published EOS-over-BOS overwrite
    bos_eos: tuple[int, int] | None = None
    #: rollouts (row, rollout) whose BOS the import restores
    restored_bos: int = 0


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


def _expect(array: np.ndarray, name: str, ndim: int, last: int | None = None) -> None:
    if array.ndim != ndim or (last is not None and array.shape[-1] != last):
        want = f"{ndim} dimensions" + (f" with {last} in the last" if last is not None else "")
        raise WspaceError(f"{name} has shape {array.shape}; expected {want}")


def _read_formal_languages(src: Path, family_cls) -> PaperData:
    names = ("parameters.npy", "sequences.npy", "logits.npy", "tasks.npy", "num_step_correct.npy")
    a = {n: _load(src, n) for n in names}
    _rows(a)
    seq, logits, tasks, nsc = a["sequences.npy"], a["logits.npy"], a["tasks.npy"], a["num_step_correct.npy"]
    _expect(a["parameters.npy"], "parameters.npy", 2)
    _expect(seq, "sequences.npy", 3)
    _expect(logits, "logits.npy", 4)
    _expect(nsc, "num_step_correct.npy", 2, 3)
    _expect(tasks, "tasks.npy", 2)
    T = logits.shape[2]
    if seq.shape[1] != logits.shape[1] or seq.shape[2] not in (T, T + 1):
        raise WspaceError(f"sequences.npy {seq.shape} and logits.npy {logits.shape} do not fit: expected "
                          f"sequences (R, N, T+1) with BOS first and logits (R, N, T, O)")
    if not np.issubdtype(seq.dtype, np.integer):
        raise WspaceError(f"formal_languages sequences.npy must hold integer tokens, got {seq.dtype}")
    bos, eos = logits.shape[-1] - 2, logits.shape[-1] - 1  # published: BOS = letters, EOS = letters + 1
    restored = _count_overwritten_bos(seq, bos, eos)
    columns = family_cls.task_columns
    if tasks.shape[1] == len(columns) + 1:
        if np.any(tasks[:, 0] != 0):
            raise WspaceError("tasks.npy has a leading column that is not all 0 (expected rows [0, mb, mc, md])")
        tasks = tasks[:, 1:]
    if tasks.shape[1] != len(columns):
        raise WspaceError(f"tasks.npy has {tasks.shape[1]} columns; expected [0, {', '.join(columns)}]")
    metrics = {family_cls.metric_columns[0]: np.asarray(nsc[:, 2], dtype=np.float64) / EVAL_STRINGS}
    for column in family_cls.metric_columns[1:]:  # not in the published files (performance_strict)
        metrics[column] = np.full(len(nsc), np.nan)
    return PaperData(
        weights=a["parameters.npy"], inputs=seq[:, :, :T], stored=logits, stored_kind="log_softmax",
        run=np.asarray(nsc[:, 0]), step=np.asarray(nsc[:, 1]),
        task_values={c: np.asarray(tasks[:, i], dtype=np.float64) for i, c in enumerate(columns)},
        metric_values=metrics, settings={"sequence_tokens": T + 1}, files=names, atol=1e-2, rtol=2.0 ** -8,
        bos_eos=(bos, eos), restored_bos=restored)


def _count_overwritten_bos(seq: np.ndarray, bos: int, eos: int, rows_per_block: int = 256) -> int:
    """The rollouts whose first token is the published EOS-over-BOS overwrite (first token EOS, no
    other EOS); refuses any other first token than BOS."""
    restored = 0
    for start in range(0, seq.shape[0], rows_per_block):
        block = np.asarray(seq[start:start + rows_per_block])  # (r, N, T+1)
        first = block[..., 0]
        overwritten = (first == eos) & ~(block[..., 1:] == eos).any(-1)
        bad = np.flatnonzero(((first != bos) & ~overwritten).any(-1))
        if bad.size:
            rows = start + bad
            raise WspaceError(f"sequences.npy rollouts at rows {rows[:10].tolist()} start with a token that is "
                              f"neither BOS ({bos}) nor the published EOS-over-BOS overwrite (EOS {eos} with no "
                              f"other EOS in the rollout); the file is damaged: re-download it")
        restored += int(overwritten.sum())
    return restored


def rollout_inputs(data: PaperData, rows, rollouts: int | None = None) -> np.ndarray:
    """The stored rollout inputs of ``rows`` (first ``rollouts`` of each), with the BOS that the
    published code overwrote restored: (r, N, T) tokens or (r, N, T, I) values."""
    inputs = np.array(data.inputs[rows] if rollouts is None else data.inputs[rows, :rollouts])
    if data.bos_eos is not None:
        bos, eos = data.bos_eos
        first = inputs[..., 0]
        first[first == eos] = bos  # checked on reading: only the overwrite starts with EOS
    return inputs


def detect_task(src: str | os.PathLike) -> str:
    """Which published zoo the folder ``src`` holds, from its files."""
    src = Path(src)
    found = [task for task, files in _MARKER_FILES.items() if all((src / f).exists() for f in files)]
    if len(found) != 1:
        listing = "; ".join(f"{t}: {', '.join(f)}" for t, f in _MARKER_FILES.items())
        raise WspaceError(f"cannot tell which published zoo {src} holds (files that mark each: {listing}); "
                          f"give --task {' or '.join(PAPER_TASKS)}")
    return found[0]


def _read_tiled_mnist(src: Path, family_cls) -> PaperData:
    names = ("parameters.npy", "sequences.npy", "logits.npy", "tasks.npy", "num_step.npy",
             "accuracy_losses.npy")
    a = {n: _load(src, n) for n in names}
    _rows(a)
    seq, logits, tasks = a["sequences.npy"], a["logits.npy"], a["tasks.npy"]
    _expect(a["parameters.npy"], "parameters.npy", 2)
    _expect(seq, "sequences.npy", 4)
    _expect(logits, "logits.npy", 4)
    _expect(a["num_step.npy"], "num_step.npy", 2, 2)
    _expect(a["accuracy_losses.npy"], "accuracy_losses.npy", 2, 4)
    if tasks.ndim == 1:
        tasks = tasks[:, None]
    _expect(tasks, "tasks.npy", 2, 1)
    if seq.shape[:3] != logits.shape[:3]:
        raise WspaceError(f"sequences.npy {seq.shape} and logits.npy {logits.shape} disagree on "
                          f"(rows, rollouts, steps)")
    acc = np.asarray(a["accuracy_losses.npy"], dtype=np.float64)
    metrics = {"performance": acc[:, 0], "train_loss": acc[:, 1], "eval_loss": acc[:, 2],
               "gap": acc[:, 2] - acc[:, 1]}
    unknown = [c for c in family_cls.metric_columns if c not in metrics]
    if unknown:
        raise WspaceError(f"the published tiled_mnist zoo has no data for metric columns {unknown}")
    return PaperData(
        weights=a["parameters.npy"], inputs=seq, stored=logits, stored_kind="logits",
        run=np.asarray(a["num_step.npy"][:, 0]), step=np.asarray(a["num_step.npy"][:, 1]),
        task_values={"angle": np.asarray(tasks[:, 0], dtype=np.float64), "weight_decay": acc[:, 3]},
        metric_values={c: metrics[c] for c in family_cls.metric_columns},
        settings={}, files=names, atol=5e-2, rtol=1e-2)


READERS: dict[str, Callable[[Path, type], PaperData]] = {
    "formal_languages": _read_formal_languages,
    "tiled_mnist": _read_tiled_mnist,
}


def _models(data: PaperData) -> tuple[np.ndarray, list[int]]:
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


def _row_names(rows: np.ndarray, data: PaperData) -> str:
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
def check_outputs(arch, family: TaskFamily, data: PaperData, rows: np.ndarray, check: str = "all") -> None:
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
    from wspace_core import plugins

    src, out = Path(src), Path(out)
    if task is None:
        if not src.is_dir():
            raise WspaceError(f"{src} is not a folder; point at the extracted published zoo")
        task = detect_task(src)
    if task not in READERS:
        raise WspaceError(f"the paper published zoos for {', '.join(PAPER_TASKS)}; got task {task!r}")
    if check not in ("all", "sample", "none"):
        raise WspaceError(f"check must be all, sample or none; got {check!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise WspaceError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not src.is_dir():
        raise WspaceError(f"{src} is not a folder; point at the extracted published zoo")
    family_cls = plugins.task_families().get(task)
    data = READERS[task](src, family_cls)
    settings = {**data.settings, **(task_settings or {})}
    family = family_cls(**settings)
    check_published(data, family)  # rows, token ids and metric ranges, before anything uses them
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

    model, steps = _models(data)
    num_models, S = int(model[-1]) + 1, len(steps)
    arch_cls = plugins.architectures().get(arch)
    sizes = infer_sizes(arch_cls, data.weights.shape[1], family.input_size, family.output_size,
                        hidden_size, num_layers)
    architecture = arch_cls(sizes)

    first_rows = np.arange(num_models) * S
    tasks = np.stack([data.task_values[c] for c in family.task_columns], axis=1)  # (R, K)
    split_names = family.split_zoo(torch.from_numpy(tasks[first_rows]), PUBLISHED_SPLIT_FRACTIONS)
    split_index = np.repeat(np.array([SPLITS.index(s) for s in split_names], dtype=np.float64), S)

    columns = ["model", "snapshot", "step", "split", *family.task_columns, *family.metric_columns]
    missing = [c for c in family.metric_columns if c not in data.metric_values]
    if missing:
        raise WspaceError(f"the published {task} zoo has no data for the family's metric columns {missing}")
    metadata = np.stack([model.astype(np.float64), np.tile(np.arange(S), num_models).astype(np.float64),
                         data.step.astype(np.float64), split_index,
                         *(data.task_values[c] for c in family.task_columns),
                         *(data.metric_values[c] for c in family.metric_columns)], axis=1)  # (R, C)

    build = {"source": "published", "task_settings": family.settings(), "arch": arch,
             "hidden_size": sizes.hidden_size, "num_layers": sizes.num_layers, "num_models": num_models,
             "chunk_size": chunk_size, "num_rollouts": int(data.inputs.shape[1]),
             "split_fractions": list(PUBLISHED_SPLIT_FRACTIONS), "restored_bos_rollouts": data.restored_bos,
             "source_sha256": {name: sha256_file(src / name) for name in data.files}}
    base = {"architecture": architecture.describe(), "task": family.describe(), "build": build,
            "snapshot_steps": steps, "num_models": num_models, "rows_per_model": S,
            "metadata_columns": columns, "imported_from": str(src.resolve())}

    resuming = resume and (out / MANIFEST_NAME).exists()
    if not resuming:  # refuse inconsistent files before anything is written
        check_outputs(architecture, family, data, np.arange(len(model)), check)
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
