"""The published formal-languages zoo of the paper (Herrmann, Faccio, Schmidhuber, ICML 2024; the
files of its Zenodo record), read for ``wspace zoo import-paper``.

Layout (one row per snapshot, R = runs x snapshots; N rollouts per row):

    parameters.npy       (R, P) float32 flat weights (torch.nn.LSTM + nn.Linear)
    tasks.npy            (R, 4) int [0, mb, mc, md]
    sequences.npy        (R, N, T+1) int16, BOS first, then the T tokens the network sampled
    logits.npy           (R, N, T, 6) float16 log-softmax; step t follows input token t
    num_step_correct.npy (R, 3) [run, step, correct strings of 1000]

The network's inputs are ``sequences[..., :T]`` (the last sampled token is never fed back, so it
is not stored); the family gets ``sequence_tokens = T + 1``; performance is correct / 1000 (the
paper's 1000 evaluation strings); tokens use the family's indices (a, b, c, d, BOS=4, EOS=5, as
the published code). ``performance_strict`` is not in the files: NaN.

The published ``accept_sequence`` writes EOS, in place, over position 0 (BOS) of every rollout
that holds no EOS (it marks "the first EOS" of a string without one at index 0), and the files
store the rollouts after that: such rows start with EOS and hold no other EOS. The reader counts
them (the import restores their BOS, the token the network was fed, which the stored logits
follow); a first token that is neither BOS nor such an overwritten BOS is refused as damage.
"""

from __future__ import annotations

import numpy as np

from wspace_core.published import LoadFiles, PublishedZoo, expect_shape
from wspace_core.registry import WspaceError

#: the files of a published formal-languages zoo; the last one tells it apart
FILES = ("parameters.npy", "sequences.npy", "logits.npy", "tasks.npy", "num_step_correct.npy")
MARKERS = ("num_step_correct.npy",)
EVAL_STRINGS = 1000  # the published zoo counts correct strings out of 1000


def read_published(family_cls, load: LoadFiles) -> PublishedZoo:
    """The published zoo whose files ``load`` reads, for ``family_cls`` (its task and metric columns)."""
    a = load(FILES)
    seq, logits, tasks, nsc = a["sequences.npy"], a["logits.npy"], a["tasks.npy"], a["num_step_correct.npy"]
    expect_shape(a["parameters.npy"], "parameters.npy", 2)
    expect_shape(seq, "sequences.npy", 3)
    expect_shape(logits, "logits.npy", 4)
    expect_shape(nsc, "num_step_correct.npy", 2, 3)
    expect_shape(tasks, "tasks.npy", 2)
    T = logits.shape[2]
    if seq.shape[1] != logits.shape[1] or seq.shape[2] not in (T, T + 1):
        raise WspaceError(f"sequences.npy {seq.shape} and logits.npy {logits.shape} do not fit: expected "
                          f"sequences (R, N, T+1) with BOS first and logits (R, N, T, O)")
    if not np.issubdtype(seq.dtype, np.integer):
        raise WspaceError(f"formal_languages sequences.npy must hold integer tokens, got {seq.dtype}")
    bos, eos = logits.shape[-1] - 2, logits.shape[-1] - 1  # published: BOS = letters, EOS = letters + 1
    restored = count_overwritten_bos(seq, bos, eos)
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
    return PublishedZoo(
        weights=a["parameters.npy"], inputs=seq[:, :, :T], stored=logits, stored_kind="log_softmax",
        run=np.asarray(nsc[:, 0]), step=np.asarray(nsc[:, 1]),
        task_values={c: np.asarray(tasks[:, i], dtype=np.float64) for i, c in enumerate(columns)},
        metric_values=metrics, settings={"sequence_tokens": T + 1}, files=FILES, atol=1e-2, rtol=2.0 ** -8,
        bos_eos=(bos, eos), restored_bos=restored, ranges={"performance": (0.0, 1.0)})


def count_overwritten_bos(seq: np.ndarray, bos: int, eos: int, rows_per_block: int = 256) -> int:
    """The rollouts of ``seq`` (R, N, T+1) whose first token is the published EOS-over-BOS
    overwrite (first token EOS, no other EOS); refuses any other first token than BOS."""
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
