"""The languages L(mb, mc, md) = { a^n b^(n+mb) c^(n+mc) d^(n+md) }: tokens, the 216 languages,
string generation, and membership (a plain-Python reference and a vectorised checker).

A *string* is the token sequence that follows BOS. It is judged up to its first EOS; whatever
follows that EOS does not matter, and a string without EOS is never in the language. n is any
integer ≥ max(0, −min(mb, mc, md)) — membership does not cap n at the training range.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import torch

A, B, C, D, BOS, EOS = 0, 1, 2, 3, 4, 5
NUM_LETTERS = 4  # a, b, c, d
NUM_SYMBOLS = 6  # letters + BOS + EOS: one-hot inputs and output logits
OFFSET_VALUES = tuple(range(-3, 3))  # mb, mc, md ∈ {−3, …, 2}
Language = tuple[int, int, int]  # (mb, mc, md)

_LETTER_OF = {"a": A, "b": B, "c": C, "d": D, "$": EOS, "^": BOS}


def all_languages() -> list[Language]:
    """The 216 languages, (mb, mc, md) in lexicographic order."""
    return [tuple(v) for v in itertools.product(OFFSET_VALUES, repeat=3)]


def language_index(tasks: torch.Tensor) -> torch.Tensor:
    """(M, 3) (mb, mc, md) -> (M,) long: the row of each language in ``all_languages()``."""
    k = len(OFFSET_VALUES)
    digits = (tasks.long() - OFFSET_VALUES[0])  # (M, 3), each in 0..k-1
    return digits[:, 0] * k * k + digits[:, 1] * k + digits[:, 2]


def min_n(mb: int, mc: int, md: int) -> int:
    """The smallest n for which every letter count n, n+mb, n+mc, n+md is ≥ 0."""
    return max(0, -min(0, mb, mc, md))


def encode(text: str) -> list[int]:
    """Tokens of a readable string: "a".."d" letters, "$" EOS, "^" BOS (e.g. "aabbccdd$")."""
    try:
        return [_LETTER_OF[ch] for ch in text]
    except KeyError as err:
        raise ValueError(f"cannot encode {err.args[0]!r}: use a, b, c, d, $ (EOS), ^ (BOS)") from None


def decode(tokens: Iterable[int]) -> str:
    """Inverse of ``encode``."""
    return "".join("abcd^$"[int(t)] for t in tokens)


def in_language(tokens: Sequence[int], mb: int, mc: int, md: int) -> bool:
    """Plain-Python reference: is the string (tokens after BOS, judged up to the first EOS) in
    L(mb, mc, md)? No EOS: not in the language."""
    judged = []
    for t in tokens:
        if int(t) == EOS:
            break
        judged.append(int(t))
    else:
        return False
    n = judged.count(A)
    if n < min_n(mb, mc, md):
        return False
    expected = [A] * n + [B] * (n + mb) + [C] * (n + mc) + [D] * (n + md)
    return judged == expected


def accepts(strings: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Vectorised membership. strings: (M, N, L) int tokens after BOS; tasks: (M, 3) (mb, mc, md)
    -> (M, N) bool, exactly ``in_language`` for every string."""
    strings = strings.long()
    is_eos = strings == EOS
    has_eos = is_eos.any(-1)  # (M, N)
    judged = is_eos.long().cumsum(-1) == 0  # (M, N, L): strictly before the first EOS
    letters_only = ((strings >= A) & (strings <= D) | ~judged).all(-1)
    # a*b*c*d*: letters never decrease inside the judged part
    ordered = ((strings[..., 1:] >= strings[..., :-1]) | ~judged[..., 1:]).all(-1)
    letter = torch.arange(NUM_LETTERS, device=strings.device)
    counts = ((strings.unsqueeze(-1) == letter) & judged.unsqueeze(-1)).sum(-2)  # (M, N, 4)
    offsets = torch.cat([torch.zeros_like(tasks[:, :1]), tasks], dim=1).long()  # (M, 4): 0, mb, mc, md
    n = counts - offsets.unsqueeze(1)  # (M, N, 4): the n each letter count implies
    same_n = (n == n[..., :1]).all(-1)
    # counts ≥ 0 and a common n already give n ≥ min_n; letters-only + ordered fix the order
    return has_eos & letters_only & ordered & same_n


def accepts_counts(strings: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """The published code's acceptance rule (``RelativeOccurrenceLanguage.accept_sequence``):
    a string is correct when it holds an EOS and its letter counts before the first EOS are
    n, n+mb, n+mc, n+md for one n. Letter order and stray BOS tokens are not checked, so it
    accepts every string ``accepts`` accepts, and more: "bacd$" is correct for L(0, 0, 0).
    strings: (M, N, L) int tokens after BOS; tasks: (M, 3) -> (M, N) bool."""
    strings = strings.long()
    is_eos = strings == EOS
    judged = is_eos.long().cumsum(-1) == 0  # (M, N, L): strictly before the first EOS
    letter = torch.arange(NUM_LETTERS, device=strings.device)
    counts = ((strings.unsqueeze(-1) == letter) & judged.unsqueeze(-1)).sum(-2)  # (M, N, 4)
    offsets = torch.cat([torch.zeros_like(tasks[:, :1]), tasks], dim=1).long()  # (M, 4)
    n = counts - offsets.unsqueeze(1)  # (M, N, 4)
    return is_eos.any(-1) & (n == n[..., :1]).all(-1)


def generate_strings(tasks: torch.Tensor, n: torch.Tensor, length: int) -> torch.Tensor:
    """The strings a^n b^(n+mb) c^(n+mc) d^(n+md), padded with EOS and cut to ``length``.
    tasks: (M, 3); n: (M, B) long -> (M, B, length) long (no BOS). A string of ``length`` letters
    or more is cut and has no EOS (as in the published zoo code)."""
    offsets = torch.cat([torch.zeros_like(tasks[:, :1]), tasks], dim=1).long()  # (M, 4)
    counts = n.unsqueeze(-1) + offsets.unsqueeze(1)  # (M, B, 4)
    ends = counts.cumsum(-1)  # (M, B, 4): where each letter block ends
    pos = torch.arange(length, device=n.device)
    letter = (pos[:, None] >= ends.unsqueeze(-2)).sum(-1)  # (M, B, length): 0..3 letters, 4 = past d
    return torch.where(letter == NUM_LETTERS, EOS, letter)
