"""The split rule: OOD = the languages closest to a^n b^n c^n d^n (|mb|+|mc|+|md| small),
validation = a fixed seeded subset of the rest, train = what remains. No language is in two splits.

The seeded subset ranks languages by a SHA-256 of (seed, language), so it is the same on every
machine and every torch version (a zoo manifest's settings pin it).
"""

from __future__ import annotations

import hashlib

from wspace_formal_languages.language import Language, all_languages


def _rank_key(seed: int, language: Language) -> str:
    return hashlib.sha256(f"{seed}:{language[0]},{language[1]},{language[2]}".encode()).hexdigest()


def split_languages(ood_max_abs_sum: int, validation_fraction: float, seed: int
                    ) -> dict[str, list[Language]]:
    """{"train", "validation", "ood"} -> languages, each list in lexicographic order."""
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
