"""The formal-languages task family: membership, training batches, splits, settings, batched
per-model-reproducible sampling, and that sampled behaviour is judged correctly."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from wspace_core import plugins
from wspace_core.architecture import Architecture, ParameterLayout, ParamSpec, Sizes
from wspace_core.registry import WspaceError
from wspace_core.symmetry import SymmetrySpec
from wspace_core.task import SPLITS, TaskFamily
from wspace_formal_languages import FormalLanguages, accepts, in_language
from wspace_formal_languages.language import (
    BOS, EOS, accepts_counts, all_languages, decode, encode, generate_strings, min_n,
)
from wspace_formal_languages.splits import letter_count_entropy, published_splits, task_keys

T = 41  # network steps of the default family (42 tokens per sequence)


def _family(**settings) -> FormalLanguages:
    return plugins.task_families().get("formal_languages")(**settings)


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _pad(tokens, length, fill=EOS):
    return tokens + [fill] * (length - len(tokens))


# ---- membership ------------------------------------------------------------------------------

CASES = [
    # (mb, mc, md), string ("$" = EOS, "^" = BOS), in the language?
    ((0, 0, 0), "aabbccdd$", True),
    ((0, 0, 0), "aabbbccdd$", False),
    ((0, 0, 0), "$", True),  # n = 0
    ((0, 0, 0), "abcd$", True),
    ((0, 0, 0), "aabbccdd", False),  # no EOS: never correct
    ((0, 0, 0), "aabbccdd$abca^", True),  # judged up to the first EOS
    ((0, 0, 0), "abcd$aabbccdd$", True),
    ((0, 0, 0), "abdc$", False),  # right counts, wrong order
    ((0, 0, 0), "abcdabcd$", False),
    ((0, 0, 0), "aabbccd$", False),
    ((0, 0, 0), "a^bcd$", False),  # BOS inside the string
    ((0, 0, 0), "a" * 10 + "b" * 10 + "c" * 10 + "d" * 10 + "$", True),  # n beyond max_n still in L
    ((-3, 0, 0), "$", False),  # n must be ≥ 3
    ((-3, 0, 0), "aaacccddd$", True),
    ((-3, 0, 0), "aaaabccccdddd$", True),
    ((-3, 0, 0), "aaaaccccdddd$", False),
    ((-3, 0, 0), "ccddd$", False),
    ((2, -1, 1), "abbbdd$", True),  # n = 1, no c
    ((2, -1, 1), "bbd$", False),  # n = 0 < min_n = 1
    ((2, -1, 1), "aabbbbcddd$", True),
    ((2, -1, 1), "aabbbbddd$", False),
    ((-3, -3, -3), "aaa$", True),
    ((-3, -3, -3), "$", False),
    ((-3, -3, -3), "aaaabcd$", True),
    ((2, 2, 2), "bbccdd$", True),
    ((2, 2, 2), "abbbcccddd$", True),
    ((2, 2, 2), "bbccd$", False),
    ((1, -2, 0), "aabbbaa$", False),
]


@pytest.mark.parametrize("task, text, expected", CASES, ids=[f"{t}-{s}" for t, s, _ in CASES])
def test_reference_membership_hand_cases(task, text, expected):
    assert in_language(encode(text), *task) is expected


def test_vectorised_membership_agrees_with_hand_cases():
    length = 48
    strings = torch.tensor([[_pad(encode(text), length, fill=BOS if "$" not in text else EOS)]
                            for _, text, _ in CASES])  # (K, 1, L); strings without EOS padded with BOS
    tasks = torch.tensor([task for task, _, _ in CASES], dtype=torch.float64)
    got = accepts(strings, tasks)[:, 0]
    assert got.tolist() == [expected for _, _, expected in CASES]


def test_vectorised_membership_agrees_with_reference_on_mutated_strings():
    g = torch.Generator().manual_seed(0)
    languages = all_languages()
    M, N, L = 40, 64, 30
    tasks = torch.tensor([languages[i] for i in torch.randint(216, (M,), generator=g)], dtype=torch.float64)
    lo = (-tasks).amax(1).clamp_min(0).long()
    n = lo[:, None] + torch.randint(0, 4, (M, N), generator=g)
    strings = generate_strings(tasks, n, L)  # (M, N, L) valid (or cut) strings
    mutate = torch.rand(M, N, L, generator=g) < 0.03
    strings = torch.where(mutate, torch.randint(0, 6, (M, N, L), generator=g), strings)
    got = accepts(strings, tasks)
    want = torch.tensor([[in_language(strings[m, i].tolist(), *map(int, tasks[m])) for i in range(N)]
                         for m in range(M)])
    assert torch.equal(got, want)
    assert 0.2 < want.float().mean() < 0.9  # both kinds well represented


# ---- training batches --------------------------------------------------------------------------

def test_training_batch_shapes_and_content():
    fam = _family()
    tasks = torch.tensor([[0, 0, 0], [-3, 2, 2], [2, 2, 2], [-3, -3, -3], [1, -2, 0]], dtype=torch.float64)
    M, B = tasks.shape[0], 400
    inputs, targets = fam.training_batch(tasks, B, _gens(range(M)))
    assert inputs.shape == (M, B, T, 6) and inputs.dtype == torch.float32
    assert targets.shape == (M, B, T) and targets.dtype == torch.long
    assert torch.all(inputs.sum(-1) == 1)
    tokens = inputs.argmax(-1)  # (M, B, T)
    assert torch.all(tokens[..., 0] == BOS)
    assert torch.equal(tokens[..., 1:], targets[..., :-1])  # teacher forcing: inputs = targets shifted
    full = torch.cat([tokens, targets[..., -1:]], dim=-1)  # (M, B, 42)
    for m in range(M):
        task = tuple(int(v) for v in tasks[m])
        ns = set()
        for row in full[m].tolist():
            string = row[1:]
            n = string.count(0)
            ns.add(n)
            complete = encode("a" * n + "b" * (n + task[0]) + "c" * (n + task[1]) + "d" * (n + task[2]))
            assert string == _pad(complete, T)[:T]  # EOS padding, cut at 41 tokens
            assert in_language(string, *task) == (len(complete) < T)
        assert ns == set(range(min_n(*task), 10))  # n ~ U[min_n, max_n)
    strings_with_eos = (targets == EOS).any(-1)
    assert torch.all(accepts(targets, tasks)[strings_with_eos])


def test_training_batch_is_per_model_reproducible():
    fam = _family()
    tasks = fam.sample_tasks(5, torch.Generator().manual_seed(3))
    inputs, targets = fam.training_batch(tasks, 16, _gens(range(10, 15)))
    for m in range(5):
        x, y = fam.training_batch(tasks[m:m + 1], 16, _gens([10 + m]))
        assert torch.equal(x[0], inputs[m]) and torch.equal(y[0], targets[m])


def test_training_loss_is_mean_cross_entropy_per_model():
    fam = _family()
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 4, T, 6, generator=g)
    targets = torch.randint(6, (3, 4, T), generator=g)
    loss = fam.training_loss(outputs, targets)
    want = torch.stack([F.cross_entropy(outputs[m].reshape(-1, 6), targets[m].reshape(-1)) for m in range(3)])
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, want)
    perfect = F.one_hot(targets, 6).float() * 40
    assert torch.all(fam.training_loss(perfect, targets) < 1e-6)


# ---- splits, tasks, settings ---------------------------------------------------------------------

# the published rule (counts before the first EOS, order and stray BOS not checked) differs from
# membership on exactly these strings of CASES
COUNTS_ONLY = {"abdc$", "abcdabcd$", "a^bcd$"}


@pytest.mark.parametrize("task, text, expected", CASES, ids=[f"{t}-{s}" for t, s, _ in CASES])
def test_published_counting_rule_hand_cases(task, text, expected):
    strings = torch.tensor([[_pad(encode(text), 48, fill=BOS if "$" not in text else EOS)]])
    published = accepts_counts(strings, torch.tensor([task], dtype=torch.float64))[0, 0].item()
    assert published == (expected or text in COUNTS_ONLY)


def test_published_rule_accepts_a_superset_of_membership():
    gen = torch.Generator().manual_seed(3)
    tasks = torch.tensor(all_languages(), dtype=torch.float64)[torch.randint(216, (40,), generator=gen)]
    lo = (-tasks).amax(1).clamp_min(0).long()
    strings = generate_strings(tasks, lo[:, None] + torch.randint(0, 4, (40, 30), generator=gen), 48)
    swap = torch.randint(0, 8, (40, 30), generator=gen)  # swap two neighbours: counts stay
    mutated = strings.clone()
    rows = torch.arange(40)[:, None], torch.arange(30)[None]
    mutated[rows + (swap,)], mutated[rows + (swap + 1,)] = strings[rows + (swap + 1,)], strings[rows + (swap,)]
    for s in (strings, mutated):
        strict, counts = accepts(s, tasks), accepts_counts(s, tasks)
        assert not (strict & ~counts).any()
    assert accepts(strings, tasks).all()
    assert (accepts_counts(mutated, tasks) & ~accepts(mutated, tasks)).any()


def test_published_task_entropy_by_hand():
    keys = task_keys(torch.tensor([[0, 0, 0], [-3, -3, -3], [2, 2, 2], [1, -1, 0]], dtype=torch.float64).numpy())
    assert keys.tolist() == [[0, 0, 0, 0], [0, -3, -3, -3], [0, 2, 2, 2], [0, 1, -1, 0]]
    h = letter_count_entropy(keys)

    def entropy(counts):
        p = torch.tensor(counts, dtype=torch.float64) / sum(counts)
        return float(-(p * torch.log(p + 1e-6)).sum())

    # counts shifted so the smallest is 1: [1,1,1,1], [4,1,1,1], [1,3,3,3], [2,3,1,2]
    for value, counts in zip(h, ([1, 1, 1, 1], [4, 1, 1, 1], [1, 3, 3, 3], [2, 3, 1, 2])):
        assert abs(value - entropy(counts)) < 1e-6
    assert h[0] == h.max()  # a^n b^n c^n d^n is the most even: OOD under the published rule


def test_published_split_of_a_small_zoo_by_hand():
    # 10 languages (one repeated: 11 networks): int(10 * 0.7) = 7 train, int(10 * 0.15) = 1
    # validation, 2 OOD: the two highest entropies, (0, 0, 0) and (1, 1, 1) here
    langs = [(0, 0, 0), (1, 1, 1), (-3, 2, 2), (2, -3, -3), (-3, -3, 2), (2, 2, -3), (-3, 2, -3),
             (2, -3, 2), (-2, 2, 2), (2, -2, -2), (-3, 2, 2)]
    names = published_splits(torch.tensor(langs, dtype=torch.float64).numpy())
    assert names[0] == names[1] == "ood"
    assert names[2] == names[10]  # one task, one split
    by_split = {split: {lang for lang, name in zip(langs, names) if name == split} for split in SPLITS}
    assert by_split["ood"] == {(0, 0, 0), (1, 1, 1)}
    assert len(by_split["validation"]) == 1 and len(by_split["train"]) == 7
    # the 8 non-OOD tasks in entropy order, permuted by numpy's RandomState(1): the last one drawn
    # is the validation task
    import numpy as np
    from wspace_core.splits import VALIDATION_SEED
    keys = task_keys(np.array(langs))
    unique = np.unique(keys, axis=0)
    ranked = unique[np.argsort(letter_count_entropy(unique))]
    validation = ranked[np.random.RandomState(VALIDATION_SEED).permutation(8)[7:]]
    assert {tuple(int(v) for v in k[1:]) for k in validation} == by_split["validation"]


def test_published_split_of_all_216_languages():
    fam = _family()
    splits = fam.splits()
    assert {s: len(v) for s, v in splits.items()} == {"train": 151, "validation": 32, "ood": 33}
    h = {lang: letter_count_entropy(task_keys([lang]))[0] for lang in all_languages()}
    assert min(h[lang] for lang in splits["ood"]) >= max(h[lang] for lang in splits["train"] + splits["validation"])
    assert (0, 0, 0) in splits["ood"]
    table = torch.tensor(all_languages(), dtype=torch.float64)
    assert fam.split_zoo(table, (0.7, 0.15, 0.15)) == fam.split_of(table)
    assert fam.split_scope() == "zoo" and _family(split_rule="wspace").split_scope() == "task"
    # a zoo missing some languages is ranked over its own languages
    assert fam.split_zoo(table[:200], (0.7, 0.15, 0.15)) != fam.split_of(table[:200])


def test_splits_are_disjoint_and_cover_all_languages():
    for fam in (_family(), _family(split_rule="wspace")):
        sets = {name: set(langs) for name, langs in fam.splits().items()}
        assert set(sets) == set(SPLITS)
        assert sum(len(s) for s in sets.values()) == 216
        assert set().union(*sets.values()) == set(all_languages())
        for a, b in itertools.combinations(sets.values(), 2):
            assert not a & b


def test_wspace_split_rule():
    fam = _family(split_rule="wspace")
    splits = fam.splits()
    sets = {name: set(langs) for name, langs in splits.items()}
    assert set(splits) == set(SPLITS)
    assert sum(len(s) for s in sets.values()) == 216
    assert set().union(*sets.values()) == set(all_languages())
    for a, b in itertools.combinations(sets.values(), 2):
        assert not a & b
    assert sets["ood"] == {(0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)}
    assert len(sets["validation"]) == round(0.1 * 209)
    assert _family(split_rule="wspace").splits() == splits  # fixed seed: every instance (every zoo) agrees
    assert set(_family(split_rule="wspace", split_seed=1).splits()["validation"]) != sets["validation"]
    assert len(_family(split_rule="wspace", ood_max_abs_sum=2).splits()["ood"]) == 1 + 6 + 12 + 6


@pytest.mark.parametrize("rule", ["published", "wspace"])
def test_split_of_and_sample_tasks(rule):
    fam = _family(split_rule=rule)
    table = torch.tensor(all_languages(), dtype=torch.float64)
    where = fam.split_of(table)
    for lang, split in zip(all_languages(), where):
        assert lang in fam.splits()[split]
    for split in SPLITS:
        tasks = fam.sample_tasks(300, torch.Generator().manual_seed(1), split=split)
        assert tasks.shape == (300, 3) and tasks.dtype == torch.float64
        assert set(fam.split_of(tasks)) == {split}
        if split != "train":  # small splits: every language shows up
            assert {tuple(map(int, r)) for r in tasks.tolist()} == set(fam.splits()[split])
    tasks = fam.sample_tasks(3000, torch.Generator().manual_seed(2))
    assert len({tuple(map(int, r)) for r in tasks.tolist()}) == 216
    again = fam.sample_tasks(3000, torch.Generator().manual_seed(2))
    assert torch.equal(tasks, again)
    with pytest.raises(WspaceError, match="train, validation, ood"):
        fam.sample_tasks(3, torch.Generator(), split="test")
    with pytest.raises(WspaceError, match="not a formal_languages task"):
        fam.split_of(torch.tensor([[0.0, 0.0, 3.0]]))
    with pytest.raises(WspaceError, match="validation_fraction"):
        _family(split_rule="wspace", validation_fraction=0).sample_tasks(2, torch.Generator(), split="validation")



def test_cover_draw_holds_every_language_once_before_any_repeats():
    uniform, cover = _family(), _family(language_draw="cover")
    languages = [tuple(map(int, r)) for r in cover.sample_tasks(500, torch.Generator().manual_seed(3)).tolist()]
    first, second, rest = languages[:216], languages[216:432], languages[432:]
    assert set(first) == set(all_languages()) and set(second) == set(all_languages())
    assert len(set(rest)) == len(rest) == 500 - 432 and first != second  # a fresh order each round
    drawn = uniform.sample_tasks(216, torch.Generator().manual_seed(3))
    assert len({tuple(map(int, r)) for r in drawn.tolist()}) < 160  # independent draws repeat (about 137 of 216)
    validation = cover.splits()["validation"]  # 32 languages
    in_split = [tuple(r) for r in cover.sample_tasks(40, torch.Generator().manual_seed(0), split="validation")
                .int().tolist()]
    assert sorted(in_split[:len(validation)]) == sorted(validation) and len(set(in_split[len(validation):])) == 8
    assert torch.equal(cover.sample_tasks(500, torch.Generator().manual_seed(3)),
                       cover.sample_tasks(500, torch.Generator().manual_seed(3)))
    assert cover.settings()["language_draw"] == "cover"
    assert "language_draw" not in uniform.settings()  # the default: zoos built before it keep their fingerprints
    assert FormalLanguages(**cover.settings()).settings() == cover.settings()
    with pytest.raises(WspaceError, match="language_draw must be one of uniform, cover; got 'each'"):
        _family(language_draw="each")

def test_settings_registration_and_properties():
    fam = _family()
    assert isinstance(fam, TaskFamily) and type(fam) is FormalLanguages
    assert plugins.task_families().owner("formal_languages") == "wspace_formal_languages"
    assert fam.settings() == {"num_eval_strings": 1000, "max_n": 10, "sequence_tokens": 42,
                              "split_rule": "published", "ood_max_abs_sum": 1, "validation_fraction": 0.1,
                              "split_seed": 0}
    assert (fam.input_size, fam.output_size, fam.sequence_length) == (6, 6, T)
    assert fam.task_columns == ("mb", "mc", "md")
    assert fam.metric_columns == ("performance", "performance_strict")
    task, perf = fam.properties()
    assert (task.name, task.kind, task.columns, task.groups, task.values) == (
        "task", "multihot", ("mb", "mc", "md"), (6, 6, 6), (-3, -2, -1, 0, 1, 2))
    assert (perf.name, perf.kind, perf.columns) == ("performance", "scalar", ("performance",))
    assert "splits" not in fam.describe()  # published: each zoo's split is its metadata
    wspace = _family(split_rule="wspace")
    assert wspace.describe()["splits"]["ood"] == [list(lang) for lang in wspace.splits()["ood"]]


@pytest.mark.parametrize("settings, match", [
    ({"num_strings": 5}, "valid settings: num_eval_strings"),
    ({"num_eval_strings": 0}, "num_eval_strings"),
    ({"max_n": 3}, "max_n"),
    ({"sequence_tokens": 14}, "sequence_tokens"),
    ({"validation_fraction": 1.0}, r"\[0, 1\)"),
    ({"ood_max_abs_sum": -2}, "ood_max_abs_sum"),
    ({"ood_max_abs_sum": 9, "split_rule": "wspace"}, "lower ood_max_abs_sum"),
    ({"split_rule": "paper"}, "split_rule must be one of published, wspace"),
    ({"split_seed": "zero"}, "split_seed"),
])
def test_bad_settings_raise_wspace_error(settings, match):
    with pytest.raises(WspaceError, match=match):
        _family(**settings)


# ---- sampling: per-model reproducibility ---------------------------------------------------------

def _lstm_models(M, seed=0):
    arch = plugins.architectures().get("lstm")(Sizes(6, 32, 6, 2))
    return arch, arch.init(M, torch.Generator().manual_seed(seed))


def test_batched_evaluate_and_rollouts_equal_single_model_calls():
    fam = _family(num_eval_strings=300)
    M = 4
    arch, params = _lstm_models(M)
    # larger weights than the init: the sampled strings vary (not all EOS-free noise)
    params = {k: v * 3 for k, v in params.items()}
    tasks = fam.sample_tasks(M, torch.Generator().manual_seed(0))
    seeds = [7, 8, 9, 10]
    perf = fam.evaluate(arch, params, tasks, _gens(seeds))["performance"]
    inputs, outputs = fam.rollouts(arch, params, tasks, 20, _gens(seeds))
    assert perf.shape == (M,) and inputs.shape == (M, 20, T) and outputs.shape == (M, 20, T, 6)
    for m in range(M):
        single = {k: v[m:m + 1] for k, v in params.items()}
        p = fam.evaluate(arch, single, tasks[m:m + 1], _gens([seeds[m]]))["performance"]
        x, y = fam.rollouts(arch, single, tasks[m:m + 1], 20, _gens([seeds[m]]))
        assert p.item() == perf[m].item()
        assert torch.equal(x[0], inputs[m])
        torch.testing.assert_close(y[0], outputs[m])
    again, _ = fam.rollouts(arch, params, tasks, 20, _gens(seeds))
    other, _ = fam.rollouts(arch, params, tasks, 20, _gens([s + 100 for s in seeds]))
    assert torch.equal(again, inputs) and not torch.equal(other, inputs)
    # outputs are log-probabilities of the network along its own samples
    torch.testing.assert_close(outputs.logsumexp(-1), torch.zeros(M, 20, T))
    net, _ = arch.forward(params, fam.network_inputs(inputs))
    torch.testing.assert_close(outputs, F.log_softmax(net, -1), atol=1e-5, rtol=1e-5)
    assert torch.all(inputs[..., 0] == BOS)


def test_rollout_mask_counts_up_to_the_first_emitted_eos():
    fam = _family()
    inputs = torch.tensor([[encode("^ab$$"), encode("^$ab$"), encode("^abab"), encode("^$$$$")]])
    mask = fam.rollout_mask(inputs)
    assert mask.tolist() == [[[True, True, True, False, False], [True, False, False, False, False],
                              [True] * 5, [True, False, False, False, False]]]


# ---- sampling is judged correctly: fake networks with known behaviour ----------------------------

class ScriptedNetwork(Architecture):
    """Fake architecture: model m's output at step t is the fixed logits ``script[m, t]``; it
    checks that it is fed BOS first, then its own previous sample."""

    name = "scripted"

    def __init__(self, steps: int, check_inputs: bool = True):
        super().__init__(Sizes(6, 1, 6))
        self.steps, self.check_inputs = steps, check_inputs

    @property
    def layout(self):
        return ParameterLayout([ParamSpec("script", (self.steps, 6))])

    @property
    def symmetry(self):
        return SymmetrySpec([])

    def init(self, num_models, generator=None, device="cpu", dtype=torch.float32):
        return {"script": torch.zeros(num_models, self.steps, 6, dtype=dtype, device=device)}

    def initial_state(self, params, batch_size):
        M = params["script"].shape[0]
        return torch.zeros(M, batch_size, dtype=torch.long), torch.full((M, batch_size), BOS)

    def step(self, params, x, state):
        t, expected_input = state
        assert torch.all(x.sum(-1) == 1)
        if self.check_inputs:  # deterministic scripts: the sample is the argmax
            assert torch.equal(x.argmax(-1), expected_input)
        script = params["script"]  # (M, T, 6)
        y = torch.gather(script, 1, t.unsqueeze(-1).expand(*t.shape, 6))  # (M, B, 6)
        sample_if_deterministic = y.argmax(-1)
        return y, (t + 1, sample_if_deterministic)


def _script(strings):
    """(M, T) tokens -> logits that emit exactly these tokens."""
    return torch.where(F.one_hot(strings, 6).bool(), 0.0, -1e4)


def test_deterministic_correct_network_scores_one_and_wrong_scores_zero():
    fam = _family(num_eval_strings=50)
    tasks = torch.tensor([[0, 0, 0], [-3, 2, 2], [2, -1, 1], [-3, -3, -3], [1, 1, 1]], dtype=torch.float64)
    M = tasks.shape[0]
    lo = (-tasks).amax(1).clamp_min(0).long()
    arch = ScriptedNetwork(T)
    right = generate_strings(tasks, (lo + 2)[:, None], T)[:, 0]  # (M, T) the n = min_n + 2 string
    metrics = fam.evaluate(arch, {"script": _script(right)}, tasks, _gens(range(M)))
    assert metrics["performance"].tolist() == metrics["performance_strict"].tolist() == [1.0] * M
    inputs, outputs = fam.rollouts(arch, {"script": _script(right)}, tasks, 3, _gens(range(M)))
    assert torch.equal(inputs[:, :, 1:], right[:, None, :-1].expand(M, 3, T - 1))
    wrong = [
        right.roll(1, dims=0),  # another model's language
        torch.where(right == EOS, torch.tensor(3), right),  # never stops: no EOS
        generate_strings(tasks, (lo + 2)[:, None], T)[:, 0].roll(1, dims=-1),  # EOS first, then letters
    ]
    wrong[2][:, 0] = 0  # "a" then the shifted string: a count that is off by one
    for strings in wrong:
        metrics = fam.evaluate(arch, {"script": _script(strings)}, tasks, _gens(range(M)))
        assert metrics["performance"].tolist() == metrics["performance_strict"].tolist() == [0.0] * M, \
            decode(strings[0].tolist())
    # letters out of order, counts right: correct by the published rule, not in the language
    swapped = right.clone()
    for m in range(M):  # the first letter moved to just before the EOS
        k = int((right[m] == EOS).nonzero()[0])
        swapped[m, :k] = right[m, :k].roll(-1)
    metrics = fam.evaluate(arch, {"script": _script(swapped)}, tasks, _gens(range(M)))
    differs = [decode(s) != decode(r) for s, r in zip(swapped.tolist(), right.tolist())]
    assert metrics["performance"].tolist() == [1.0] * M
    assert all(differs) and metrics["performance_strict"].tolist() == [0.0] * M


def test_sampled_distribution_is_judged_correctly():
    """Step 0 emits EOS or 'a' with probability 1/2 each, then EOS: for L(0, 0, 0) the empty
    string is right and "a" is wrong, so performance ≈ 0.5; for L(1, 0, 0) neither is right."""
    fam = _family(num_eval_strings=2000)
    script = _script(torch.full((2, T), EOS))
    script[:, 0, 0] = 0.0  # 'a' as likely as EOS
    tasks = torch.tensor([[0, 0, 0], [1, 0, 0]], dtype=torch.float64)
    perf = fam.evaluate(ScriptedNetwork(T, check_inputs=False), {"script": script}, tasks, _gens([0, 1]))["performance"]
    assert abs(perf[0].item() - 0.5) < 0.05  # 5 standard deviations of a binomial mean
    assert perf[1].item() == 0.0
