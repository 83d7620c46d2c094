"""The split rules over the 216 languages.

``published`` (default): the published code's rule, applied to a zoo's whole set of languages
(``wspace_core.splits``): the unique tasks ``[0, mb, mc, md]`` ranked by the entropy of their
relative letter counts (``letter_count_entropy``); the highest-entropy 15 % are OOD (33 of 216 when
the zoo holds every language), a seeded 15 % of all tasks are validation, the rest train.

``wspace`` (option): OOD = the languages closest to a^n b^n c^n d^n (|mb|+|mc|+|md| ≤
``ood_max_abs_sum``: 7 languages), validation = a fixed seeded subset of the rest, train = what
remains. The seeded subset ranks languages by a SHA-256 of (seed, language), so it is the same on
every machine and every torch version (a zoo manifest's settings pin it).

No language is in two splits under either rule.
"""

from __future__ import annotations

import hashlib

import numpy as np

from wspace_core import splits as published
from wspace_formal_languages.language import Language, all_languages

#: the published protocol's validation and OOD shares of the unique tasks
PUBLISHED_FRACTIONS = (0.7, 0.15, 0.15)


def task_keys(languages: np.ndarray) -> np.ndarray:
    """(M, 3) (mb, mc, md) -> (M, 4) int64 ``[0, mb, mc, md]``: the task as the published
    ``tasks.npy`` stores it (the offset of a is 0)."""
    languages = np.asarray(languages)
    rounded = np.rint(languages).astype(np.int64)
    return np.concatenate([np.zeros((len(rounded), 1), dtype=np.int64), rounded], axis=1)


def letter_count_entropy(keys: np.ndarray) -> np.ndarray:
    """(U, 4) int task keys -> (U,) the entropy of the relative letter counts, as the published
    ``task_entropy_criterion`` computes it (shift so the smallest count is 1, normalise, entropy
    with +1e-6 inside the log; the same numpy operations in the same dtypes, so ties and ranks
    come out as published). a^n b^n c^n d^n-like languages have the highest entropy."""
    counts = 1 + keys - keys.min(axis=-1, keepdims=True)  # int64
    shares = counts.astype(np.float32) / counts.sum(axis=-1, keepdims=True)  # float64 (numpy promotion)
    return -(shares * np.log(shares + 1e-6)).sum(axis=-1)


def published_splits(languages: np.ndarray, fractions=PUBLISHED_FRACTIONS) -> list[str]:
    """The published split of every network, one (mb, mc, md) row per network of the zoo."""
    return published.ranked_task_splits(task_keys(languages), letter_count_entropy, fractions)


def published_ood_training_half(languages: np.ndarray, is_ood) -> np.ndarray:
    """(M,) bool: the OOD networks whose language joins a downstream predictor's training data."""
    return published.ood_training_half(task_keys(languages), letter_count_entropy, is_ood)


def published_split_languages() -> dict[str, list[Language]]:
    """{"train", "validation", "ood"} -> languages, each list in lexicographic order: the published
    split of a zoo that holds all 216 languages."""
    languages = all_languages()
    names = published_splits(np.asarray(languages))
    return {split: [lang for lang, name in zip(languages, names) if name == split]
            for split in ("train", "validation", "ood")}


def _rank_key(seed: int, language: Language) -> str:
    return hashlib.sha256(f"{seed}:{language[0]},{language[1]},{language[2]}".encode()).hexdigest()


def split_languages(ood_max_abs_sum: int, validation_fraction: float, seed: int
                    ) -> dict[str, list[Language]]:
    """The ``wspace`` rule: {"train", "validation", "ood"} -> languages, each list in
    lexicographic order."""
    languages = all_languages()
    ood = [lang for lang in languages if sum(map(abs, lang)) <= ood_max_abs_sum]
    rest = [lang for lang in languages if sum(map(abs, lang)) > ood_max_abs_sum]
    num_validation = round(validation_fraction * len(rest))
    validation = set(sorted(rest, key=lambda lang: _rank_key(seed, lang))[:num_validation])
    return {
        "train": [lang for lang in rest if lang not in validation],
        "validation": [lang for lang in rest if lang in validation],
        "ood": ood,
    }
