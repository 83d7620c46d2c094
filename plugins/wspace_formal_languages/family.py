"""The formal-languages task family of the paper: each network learns to generate one language
L(mb, mc, md) = { a^n b^(n+mb) c^(n+mc) d^(n+md) } autoregressively.

Sequences: BOS + string, padded with EOS to ``sequence_tokens`` (42) tokens and cut there (the
longest string, n=9 of L(2, 2, 2), has 42 letters: cut strings carry no EOS, as in the published
zoo code). The network takes T = ``sequence_tokens`` − 1 = 41 steps: inputs are tokens 0..40,
targets tokens 1..41 (teacher forcing, cross-entropy). ``sequence_length`` is T.

Performance, two metadata columns for every snapshot, both over the same ``num_eval_strings``
strings sampled from BOS for T steps:
- ``performance``: the published code's rule (``accepts_counts``): the letter counts before the
  first EOS fit the language, order not checked; no EOS: wrong. The column published zoos store
  (``num_step_correct.npy``) and the one wspace's plots and tables use.
- ``performance_strict``: membership in the language as the paper defines it (``accepts``).

Splits: ``split_rule="published"`` (default) or ``"wspace"``; see ``wspace_formal_languages.splits``.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from wspace_core.architecture import Architecture, Params
from wspace_core.published import LoadFiles, PublishedZoo
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS, PropertySpec, TaskFamily
from wspace_core.validators import Check, int_at_least, number_in, one_of, positive_int
from wspace_formal_languages import published
from wspace_formal_languages.language import (
    BOS, EOS, NUM_SYMBOLS, OFFSET_VALUES, Language, accepts, accepts_counts, all_languages, generate_strings,
    language_index, min_n,
)
from wspace_formal_languages.sampling import sample_strings
from wspace_formal_languages.splits import (
    published_ood_training_half, published_split_languages, published_splits, split_languages,
)

SPLIT_RULES = ("published", "wspace")
#: how a zoo's networks get their languages: "uniform", each drawn independently (the published
#: zoo code), or "cover", every language once (in a seeded random order) before any repeats
LANGUAGE_DRAWS = ("uniform", "cover")

#: the largest min_n of any language (an offset of −3); max_n must exceed it
_LARGEST_MIN_N = -min(OFFSET_VALUES)
#: the longest shortest string of any language (L(−3, 2, 2) at n=3: 13 letters), + BOS + EOS
_MIN_SEQUENCE_TOKENS = max(4 * min_n(*lang) + sum(lang) for lang in all_languages()) + 2


def _int_at_least(lowest: int, why: str) -> Check:
    return int_at_least(lowest, f"formal_languages setting {{name}} must be an integer ≥ {{lowest}} ({why}); "
                                f"got {{value!r}}")


def _int_to_float(value):
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


_fraction = number_in(0, 1, "formal_languages setting {name} must be a number in [0, 1); got {value!r}",
                      low_closed=True)


@attrs.frozen(kw_only=True)
class FormalLanguagesSettings:
    """Settings of the family (all part of a zoo's fingerprint)."""

    #: strings sampled per network to measure performance
    num_eval_strings: int = attrs.field(default=1000, validator=_int_at_least(1, "strings per evaluation"))
    #: training strings draw n uniformly from [min_n, max_n)
    max_n: int = attrs.field(default=10, validator=_int_at_least(
        _LARGEST_MIN_N + 1, f"every language needs some n in [min_n, max_n), and min_n reaches {_LARGEST_MIN_N}"))
    #: tokens per training sequence, BOS included; the network takes one step fewer
    sequence_tokens: int = attrs.field(default=42, validator=_int_at_least(
        _MIN_SEQUENCE_TOKENS, "the shortest string of every language must fit with BOS and EOS"))
    #: "published": splits by task over the zoo's languages, ranked by letter-count entropy (the
    #: published code); "wspace": the settings below
    split_rule: str = attrs.field(default="published", validator=one_of(
        *SPLIT_RULES, message="formal_languages setting {name} must be one of {choices}; got {value!r}"))
    #: split_rule=wspace: languages with |mb|+|mc|+|md| ≤ this are the OOD split (−1: no OOD split)
    ood_max_abs_sum: int = attrs.field(default=1, validator=_int_at_least(-1, "−1 turns the OOD split off"))
    #: split_rule=wspace: fraction of the non-OOD languages held out for validation
    validation_fraction: float = attrs.field(default=0.1, converter=_int_to_float, validator=_fraction)
    #: split_rule=wspace: seed of the validation subset (fixed, so every zoo gets the same split)
    split_seed: int = attrs.field(default=0, validator=_int_at_least(0, "a fixed non-negative seed"))
    #: "uniform" (published): each network's language drawn independently, so a zoo of 128 networks
    #: holds about 97 of the 216 languages; "cover": the languages in a seeded random order, each
    #: once before any repeats, so 216 networks hold all of them (a small zoo's choice, issue #13)
    language_draw: str = attrs.field(default="uniform", validator=one_of(
        *LANGUAGE_DRAWS, message="formal_languages setting {name} must be one of {choices}; got {value!r}"))


class FormalLanguages(TaskFamily):
    """a^n b^(n+mb) c^(n+mc) d^(n+md), mb, mc, md ∈ {−3, …, 2}: 216 languages (one per network)."""

    name = "formal_languages"
    input_kind = "onehot"
    output_kind = "categorical"
    task_columns = ("mb", "mc", "md")
    metric_columns = ("performance", "performance_strict")
    task_property = "task"
    paper_zoo = "formal_languages"
    #: language_draw came after the first zoos, which drew uniformly
    unrecorded_defaults = {"language_draw": "uniform"}
    #: the small presets' zoos. smoke: fewer evaluation strings. quick: small-budget choices
    #: measured in reports/emulation_curves (issue #13): 256 networks holding every language
    #: (language_draw="cover": each once before any repeats), 300 steps at lr 0.02 held for 70 % of
    #: training, then down to 0.002 (on 32 networks: performance 0.91 at the end, all ≥ 0.8, where
    #: the paper's schedule scaled to 300-500 steps ends at 0.73-0.83), and snapshots late in
    #: training (0, 5, 10, 25, 50, 70, 85, 100 %: three of eight ≥ 0.8 on average, where the paper's
    #: fractions give one). The paper preset keeps the paper's zoo
    zoo_presets = {"smoke": {"task_settings": {"num_eval_strings": 32}},
                   "quick": {"num_models": 256, "chunk_size": 128, "steps": 300,
                             "lr_fractions": ((0, 0.02), (0.7, 0.02), (1, 0.002)),
                             "snapshot_fractions": (0, 0.05, 0.1, 0.25, 0.5, 0.7, 0.85, 1),
                             "task_settings": {"num_eval_strings": 500, "language_draw": "cover"}}}

    def __init__(self, **settings: Any):
        known = [f.name for f in attrs.fields(FormalLanguagesSettings)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise WspaceError(f"unknown formal_languages setting(s) {', '.join(unknown)}; "
                              f"valid settings: {', '.join(known)}")
        self.config = FormalLanguagesSettings(**settings)
        self.input_size = NUM_SYMBOLS
        self.output_size = NUM_SYMBOLS
        self.sequence_length = self.config.sequence_tokens - 1
        if self.config.split_rule == "published":
            self._splits = published_split_languages()
        else:
            self._splits = split_languages(self.config.ood_max_abs_sum, self.config.validation_fraction,
                                           self.config.split_seed)
        if not self._splits["train"]:
            raise WspaceError("the formal_languages train split is empty; lower ood_max_abs_sum "
                              "or validation_fraction")
        self._split_of = {lang: split for split, langs in self._splits.items() for lang in langs}
        # every training sequence there is: BOS + the string of language i at n, (216, max_n, T + 1)
        table = torch.tensor(all_languages(), dtype=torch.float64)
        n = torch.arange(self.config.max_n).expand(len(table), -1)
        strings = generate_strings(table, n, self.sequence_length)
        self._sequences = torch.cat([torch.full_like(strings[..., :1], BOS), strings], dim=-1)
        self._one_hot = torch.eye(NUM_SYMBOLS)

    # ---- settings, tasks, splits -------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The settings, less ``unrecorded_defaults`` at their values."""
        return self.recorded_settings(attrs.asdict(self.config))

    def splits(self) -> dict[str, list[Language]]:
        """{"train", "validation", "ood"} -> the languages (mb, mc, md) of each split (published
        rule: the split of a zoo that holds all 216 languages; a zoo missing some gets its own,
        see ``split_zoo``)."""
        return {split: list(langs) for split, langs in self._splits.items()}

    def sample_tasks(self, num_models: int, generator: torch.Generator,
                     split: str | None = None) -> torch.Tensor:
        if split is None:
            languages = all_languages()
        elif split in SPLITS:
            languages = self._splits[split]
        else:
            raise WspaceError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (or None for all)")
        if not languages:
            raise WspaceError(f"the formal_languages {split} split is empty; raise "
                              f"{'validation_fraction' if split == 'validation' else 'ood_max_abs_sum'}")
        table = torch.tensor(languages, dtype=torch.float64)  # (K, 3)
        if self.config.language_draw == "cover":  # whole seeded permutations of the K languages, cut to M
            rounds = -(-num_models // len(languages))
            index = torch.cat([torch.randperm(len(languages), generator=generator, device=generator.device)
                               for _ in range(rounds)])[:num_models]
        else:
            index = torch.randint(len(languages), (num_models,), generator=generator, device=generator.device)
        return table[index.cpu()]

    def split_of(self, tasks: torch.Tensor) -> list[str]:
        return [self._split_of[lang] for lang in self._languages_of(tasks)]

    def split_scope(self) -> str:
        return "zoo" if self.config.split_rule == "published" else "task"

    def split_zoo(self, tasks: torch.Tensor, fractions=(0.7, 0.15, 0.15)) -> list[str]:
        """Published rule: ranked over the zoo's own set of languages (a zoo that misses some of the
        216 gets a different split than ``splits()``); wspace rule: ``split_of``."""
        self._languages_of(tasks)
        if self.config.split_rule == "published":
            return published_splits(tasks.numpy(), fractions)
        return self.split_of(tasks)

    def ood_training_half(self, tasks: torch.Tensor, is_ood) -> np.ndarray:
        """The published halving: the zoo's OOD languages in entropy-rank order, permuted (seed 2)."""
        self._languages_of(tasks)
        return published_ood_training_half(tasks.numpy(), is_ood)

    def _languages_of(self, tasks: torch.Tensor) -> list[Language]:
        if tasks.ndim != 2 or tasks.shape[1] != 3:
            raise WspaceError(f"formal_languages tasks must have shape (models, 3) = (mb, mc, md); "
                              f"got {tuple(tasks.shape)}")
        rows = [tuple(float(v) for v in row) for row in tasks.tolist()]
        langs = [tuple(int(v) for v in row) for row in rows]
        for row, lang in zip(rows, langs):
            if row != tuple(float(v) for v in lang) or lang not in self._split_of:
                raise WspaceError(f"{row} is not a formal_languages task; mb, mc, md must be integers "
                                  f"in {OFFSET_VALUES[0]}..{OFFSET_VALUES[-1]}")
        return langs

    def _check(self, tasks: torch.Tensor, generators: Sequence[torch.Generator]) -> None:
        self._languages_of(tasks)
        if len(generators) != tasks.shape[0]:
            raise WspaceError(f"got {len(generators)} generators for {tasks.shape[0]} tasks; "
                              "pass one torch.Generator per model")

    # ---- training ----------------------------------------------------------------------------

    def training_batch(self, tasks: torch.Tensor, batch_size: int,
                       generators: Sequence[torch.Generator],
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (M, B, T, 6) one-hot float, targets (M, B, T) long: BOS + a string of each
        model's language, n ~ U[min_n, max_n), EOS-padded."""
        self._check(tasks, generators)
        tasks = tasks.cpu()
        lowest = (-tasks).amax(1).clamp_min(0).long().tolist()  # (M,) min_n of each language
        n = torch.stack([torch.randint(lo, self.config.max_n, (batch_size,), generator=g, device=g.device).cpu()
                         for lo, g in zip(lowest, generators)])  # (M, B)
        sequence = self._sequences[language_index(tasks)[:, None], n]  # (M, B, T + 1)
        inputs = self._one_hot[sequence[..., :-1]]  # (M, B, T, 6)
        return inputs.to(device), sequence[..., 1:].to(device)

    def training_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of each model: outputs (M, B, T, 6) logits -> (M,)."""
        log_probs = F.log_softmax(outputs, dim=-1)
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (M, B, T)
        return -picked.flatten(1).mean(1)

    # ---- behaviour ---------------------------------------------------------------------------

    def rollout_mask(self, rollout_inputs: torch.Tensor) -> torch.Tensor:
        """(M, N, T) bool: steps up to and including the one that emits the first EOS. Step t
        emits token t+1; it counts while no EOS was emitted before it (input 0 is BOS)."""
        emitted_eos = (rollout_inputs[..., 1:] == EOS).long().cumsum(-1) > 0  # (M, N, T-1)
        first = torch.ones_like(rollout_inputs[..., :1], dtype=torch.bool)
        return torch.cat([first, ~emitted_eos], dim=-1)

    def evaluate(self, arch: Architecture, params: Params, tasks: torch.Tensor,
                 generators: Sequence[torch.Generator]) -> dict[str, torch.Tensor]:
        """(M,) each: "performance", the fraction of sampled strings correct by the published rule,
        and "performance_strict", the fraction in the language (the same strings)."""
        self._check(tasks, generators)
        strings, _ = sample_strings(arch, params, self.config.num_eval_strings, self.sequence_length,
                                    generators)  # (M, S, T)
        tasks = tasks.to(strings.device)
        return {"performance": accepts_counts(strings, tasks).float().mean(1),
                "performance_strict": accepts(strings, tasks).float().mean(1)}

    def rollouts(self, arch: Architecture, params: Params, tasks: torch.Tensor, num_rollouts: int,
                 generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (M, N, T) long tokens fed to the network (BOS, then its own samples) and
        outputs (M, N, T, 6) its log-softmax at every step."""
        self._check(tasks, generators)
        positive_int.require("num_rollouts", num_rollouts)
        strings, log_probs = sample_strings(arch, params, num_rollouts, self.sequence_length,
                                            generators, keep_log_probs=True)
        bos = torch.full_like(strings[..., :1], BOS)
        return torch.cat([bos, strings[..., :-1]], dim=-1), log_probs

    # ---- downstream --------------------------------------------------------------------------

    def properties(self) -> tuple[PropertySpec, ...]:
        k = len(OFFSET_VALUES)
        return (
            PropertySpec("task", "multihot", self.task_columns, num_classes=3 * k, groups=(k, k, k),
                         values=OFFSET_VALUES),
            PropertySpec("performance", "scalar", ("performance",)),
        )

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.config.split_rule == "wspace":  # fixed per language; published: decided per zoo (metadata)
            out["splits"] = {split: [list(lang) for lang in langs] for split, langs in self._splits.items()}
        return out

    #: the paper's published zoos (``wspace zoo import-paper``)
    published_markers = published.MARKERS

    @classmethod
    def read_published(cls, load: LoadFiles) -> PublishedZoo:
        """The paper's published zoo (``wspace_formal_languages.published``)."""
        return published.read_published(cls, load)
