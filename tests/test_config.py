"""The run configuration tree: presets read in one place, preset < file < flags applied once, every
section overridable from a TOML file and logged, stored configurations (today's and earlier
layouts) rebuilt into the same object, and zoo presets that give the zoos they always gave."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import attrs
import pytest

from wspace import presets
from wspace.config import (SECTIONS, EncoderSettings, PretrainConfig, RunConfig, config_from_dict, load_toml,
                           resolve)
from wspace.experiment.zoos import zoo_config_for, zoo_path_for
from wspace.tracking import flatten_params
from wspace.zoo.build import preset_config
from wspace_core import plugins
from wspace_core.hookspecs import hookimpl
from wspace_core.presets import PRESETS
from wspace_core.registry import WspaceError

ROOT = Path(__file__).resolve().parents[1]

#: sha256 (16 hex digits) of ``json.dumps(attrs.asdict(preset_config(task, preset, device=device)),
#: sort_keys=True)``, computed by wspace before the presets moved out of wspace/zoo/build.py (commit
#: 5b98d1a): every field of every preset's ZooConfig, so the fingerprint of every preset zoo
ZOO_CONFIG_DIGESTS = {
    ("formal_languages", "smoke", "cpu"): "4f33f5a9708a9b42",  # 12 models in chunks of 4, 30 steps, 4 rollouts, {'num_eval_strings': 32}
    ("formal_languages", "smoke", "cuda"): "c8259365c463e4fd",
    # changed on purpose for issue #13 (256 models in chunks of 128, 300 steps, lr 0.02 held for 70 %,
    # snapshots late in training, {'num_eval_strings': 500, 'language_draw': 'cover'}); at 5b98d1a:
    # b47b6aa6cc1f73be / 8f8a863362124274, which reports/quick_formal_languages/config.toml still gives
    ("formal_languages", "quick", "cpu"): "3c3c1caf9ac28aff",
    ("formal_languages", "quick", "cuda"): "a782dd98980cc8de",
    ("formal_languages", "paper", "cpu"): "bc16efc9dbd49ddb",  # 1000 models in chunks of 100, 20000 steps, 100 rollouts, {}
    ("formal_languages", "paper", "cuda"): "73b400829a4c601b",  # chunks of 1000
    ("tiled_mnist", "smoke", "cpu"): "e10d840024acfda8",  # 12 models in chunks of 4, 30 steps, 4 rollouts, {'num_eval_images': 32}
    ("tiled_mnist", "smoke", "cuda"): "3901fe259d99f62f",
    ("tiled_mnist", "quick", "cpu"): "989abc71ac67ad81",  # 64 models in chunks of 64, 1500 steps, 100 rollouts, {'num_eval_images': 200}
    ("tiled_mnist", "quick", "cuda"): "105c35fffcc44363",
    ("tiled_mnist", "paper", "cpu"): "854735eeefe276a6",  # 1000 models in chunks of 100, 20000 steps, 100 rollouts, {}
    ("tiled_mnist", "paper", "cuda"): "8426d4f1d4a1e6a5",  # chunks of 1000
}
#: the zoo directory `wspace run` builds or reuses for each (task, preset, device), as before (5b98d1a)
RUN_ZOO_DIRS = {
    ("formal_languages", "smoke"): "lstm-formal_languages-1b5f529857a2",
    ("formal_languages", "quick"): "lstm-formal_languages-3ee7809963c3",  # a37250ad0ad4 before issue #13
    ("formal_languages", "paper", "cpu"): "lstm-formal_languages-41309f69f01b",
    ("formal_languages", "paper", "cuda"): "lstm-formal_languages-5c5a55d4811c",
    ("tiled_mnist", "smoke"): "lstm-tiled_mnist-37c2827f6ba5",
    ("tiled_mnist", "quick"): "lstm-tiled_mnist-df0eaf4e69dc",
    ("tiled_mnist", "paper", "cpu"): "lstm-tiled_mnist-88d47d81f723",
    ("tiled_mnist", "paper", "cuda"): "lstm-tiled_mnist-0aa45d7e3ac1",
}


def _digest(config) -> str:
    return hashlib.sha256(json.dumps(attrs.asdict(config), sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("task, preset, device", sorted(ZOO_CONFIG_DIGESTS))
def test_every_preset_zoo_is_field_for_field_what_it_was(task, preset, device):
    expected = ZOO_CONFIG_DIGESTS[task, preset, device]
    assert _digest(preset_config(task, preset, device=device)) == expected
    run_config = resolve(preset=preset, task=task, device=device)
    assert _digest(zoo_config_for(run_config)) == expected  # `wspace run` builds the same zoo
    name = RUN_ZOO_DIRS.get((task, preset), RUN_ZOO_DIRS.get((task, preset, device)))
    assert zoo_path_for(run_config).name == name




def test_a_setting_at_its_unrecorded_default_names_the_same_zoo_as_none():
    plain = resolve(preset="smoke")
    explicit = resolve(preset="smoke", zoo={"task_settings": {"language_draw": "uniform"}})
    assert zoo_path_for(explicit) == zoo_path_for(plain) and zoo_config_for(explicit) == zoo_config_for(plain)
    cover = resolve(preset="smoke", zoo={"task_settings": {"language_draw": "cover"}})
    assert zoo_config_for(cover).task_settings["language_draw"] == "cover" and zoo_path_for(cover) != zoo_path_for(plain)

def test_the_committed_quick_comparison_reruns_from_its_config_file():
    """reports/quick_formal_languages ran on the quick preset of commit efecaab; its config.toml
    gives that run's zoo (the fingerprint its report names) and pretraining on today's wspace."""
    config = resolve(load_toml(ROOT / "reports/quick_formal_languages/config.toml"))
    assert _digest(zoo_config_for(config)) == "b47b6aa6cc1f73be"  # the quick zoo's digest at efecaab
    assert zoo_path_for(config).name == "lstm-formal_languages-a37250ad0ad4"
    assert "lstm-formal_languages-a37250ad0ad4" in (ROOT / "reports/quick_formal_languages/report.md").read_text()
    assert config.pretrain == PretrainConfig(steps=1000, emulator_hidden=96, eval_rollouts=8, objective="cross_entropy",
                                             lr=3e-3, emulator_condition="every_step", emulator_open_forget_gates=True,
                                             patience=5, lr_schedule="constant", warmup_steps=0,
                                             selection_metric="objective")
    assert config.encoder.options == {"interactive_probing.answers": "raw", "noninteractive_probing.answers": "raw"}

def test_overridden_zoos_are_what_they_were():
    """Overrides through `wspace run` and `wspace zoo build` give the zoo they gave before."""
    config = zoo_config_for(resolve(preset="quick", task="tiled_mnist", zoo={"num_models": 50, "chunk_size": 10}))
    assert config == preset_config("tiled_mnist", "quick", num_models=50, chunk_size=10)
    assert (config.num_models, config.chunk_size, config.task_settings) == (50, 10, {"num_eval_images": 200})
    shrunk = zoo_config_for(resolve(preset="quick", zoo={"num_models": 10, "steps": 2000, "seed": 3}))
    assert (shrunk.num_models, shrunk.chunk_size, shrunk.seed, shrunk.schedule.steps) == (10, 10, 3, 2000)
    assert shrunk == preset_config("formal_languages", "quick", num_models=10, steps=2000, seed=3)
    merged = resolve(preset="quick", **{"zoo.task_settings": {"max_n": 12}}).zoo.task_settings
    assert merged == {"num_eval_strings": 500, "language_draw": "cover", "max_n": 12}  # the family's preset settings, then the flag's


def test_presets_are_declared_once_under_the_core_names():
    for table in (presets.ZOO_PRESETS, presets.PRETRAIN_PRESETS, presets.DOWNSTREAM_PRESETS, presets.COMPARE_SEEDS):
        assert tuple(table) == PRESETS
    for name in plugins.task_families():
        assert set(plugins.task_families().get(name).zoo_presets) <= set(PRESETS), name
    from wspace_encoders.config import PresetConfig
    from wspace_probing.config import PRESETS as PROBING_SIZES

    assert set(PROBING_SIZES) == set(PRESETS)
    configs = [c for c in _subclasses(PresetConfig) if c.presets]
    assert configs and all(set(c.presets) == set(PRESETS) for c in configs)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _code_strings(path: Path) -> set[str]:
    """The string constants of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_the_application_names_no_bundled_family_in_its_preset_code():
    families = set(plugins.task_families())
    settings = {"num_eval_strings", "num_eval_images"}
    for path in ("wspace/presets.py", "wspace/zoo/build.py"):
        assert not _code_strings(ROOT / path) & (families | settings), path
    assert "paper" not in _code_strings(ROOT / "wspace/zoo/build.py")  # the CUDA chunk is preset data


def test_a_family_declares_its_own_zoo_sizes(register_plugin, plugin_namespace):
    from wspace_formal_languages.family import FormalLanguages

    class Tiny(FormalLanguages):
        name = "tiny_languages"
        zoo_presets = {"quick": {"num_models": 32, "task_settings": {"num_eval_strings": 20}}}

    class Broken(FormalLanguages):
        name = "broken_languages"
        zoo_presets = {"huge": {"num_models": 32}}

    @hookimpl
    def register_task_families(register):
        register("tiny_languages", Tiny)
        register("broken_languages", Broken)

    plugin_namespace.register_task_families = register_task_families
    register_plugin(plugin_namespace, "tiny")
    config = preset_config("tiny_languages", "quick")
    assert (config.num_models, config.chunk_size, config.task_settings) == (32, 32, {"num_eval_strings": 20})
    assert preset_config("tiny_languages", "smoke").num_models == presets.ZOO_PRESETS["smoke"]["num_models"]
    with pytest.raises(WspaceError, match="'broken_languages'.*'huge'; presets: smoke, quick, paper"):
        resolve(task="broken_languages")


def test_preset_then_file_then_flags_in_every_section(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "smoke"\n[zoo]\nnum_models = 16\nsteps = 40\n[zoo.task_settings]\nmax_n = 6\n'
                    '[downstream]\nfrozen_steps = 7\nood_half = "network"\n[pretrain]\nsteps = 11\n'
                    '[encoder.options]\nlength = 4\n')
    config = resolve(load_toml(toml), zoo={"steps": 50}, **{"encoder.options": {"num_probes": 3}},
                     **{"downstream.frozen_steps": 9, "pretrain.lr": 0.5})
    smoke = resolve(preset="smoke")
    assert (config.zoo.num_models, config.zoo.steps, config.zoo.num_rollouts) == (16, 50, smoke.zoo.num_rollouts)
    assert config.zoo.chunk_size == smoke.zoo.chunk_size  # 4 <= 16 models: kept
    assert config.zoo.task_settings == {"num_eval_strings": 32, "max_n": 6}
    assert (config.downstream.frozen_steps, config.downstream.ood_half) == (9, "network")
    assert config.downstream.supervised_steps == smoke.downstream.supervised_steps == 20
    assert (config.pretrain.steps, config.pretrain.lr) == (11, 0.5)
    assert config.encoder.options == {"length": 4, "num_probes": 3}
    assert RunConfig(preset="smoke") == smoke  # sections left out are the preset's


@pytest.mark.parametrize("text, match", [
    ("[downstream]\nfrozen_step = 3\n", r"'frozen_step'.*\[downstream\]"),
    ("[downstream]\nsupervised_lr = -1.0\n", "supervised_lr must be a positive"),
    ("[downstream]\nood_half = 'model'\n", "ood_half must be one of task, network"),
    ("downstream = 3\n", "'downstream' must be a table"),
    ("[zoo]\ntask_settings = 3\n", "task_settings must be a table"),
    ("[task_settings]\nmax_n = 3\n", r"\[zoo.task_settings\]"),
    ("[zoo]\nchunk_size = 0\n", "chunk_size must be a positive integer"),
    ("z_dim = 8\n", r"'z_dim' is an encoder setting; write it as \[encoder\] z_dim"),
    ("[encoder_options]\nlength = 3\n", r"write it as \[encoder.options\]"),
    ("[encoder]\nzdim = 8\n", r"'zdim'.*\[encoder\]"),
    ("[encoder]\nz_dim = 0\n", "z_dim must be a positive integer"),
    ("encoder = 3\n", "'encoder' must be a table"),
])
def test_bad_sections_are_refused_with_the_key_named(tmp_path, text, match):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(WspaceError, match=match):
        resolve(load_toml(toml))


@pytest.mark.parametrize("flags", [
    dict(preset="smoke"),
    dict(preset="paper", device="cuda", task="tiled_mnist", seed=4),
    dict(preset="quick", zoo={"num_models": 10, "task_settings": {"max_n": 6}}, encoder={"options": {"length": 3}},
         **{"downstream.ood_half": "network", "pretrain.objective": "reverse_kl"}),
])
def test_a_stored_configuration_is_rebuilt_into_the_same_object(flags):
    config = resolve(**flags)
    stored = json.loads(json.dumps(attrs.asdict(config)))  # as config.json and encoder.pt hold it
    assert config_from_dict(stored, "config.json") == config


def test_a_configuration_stored_before_the_typed_zoo_section_loads_its_zoo():
    """config.json as wspace wrote it at 5b98d1a: ``zoo`` the overrides of the preset, task
    settings beside it, no downstream section."""
    stored = {"arch": "lstm", "task": "formal_languages", "encoder": "dwsnet", "preset": "smoke", "seed": 2,
              "z_dim": 8, "device": "cpu", "zoo": {"num_models": 8}, "zoo_path": None,
              "task_settings": {"max_n": 6}, "encoder_options": {"channels": 4},
              "pretrain": attrs.asdict(PretrainConfig(steps=30)), "out_dir": "runs", "tracking_uri": None,
              "tracking": False, "experiment": "wspace"}
    config = config_from_dict(stored, "config.json")
    assert zoo_config_for(config) == preset_config("formal_languages", "smoke", num_models=8,
                                                   task_settings={"max_n": 6})
    assert config.downstream == resolve(preset="smoke").downstream
    assert config.encoder == EncoderSettings(name="dwsnet", z_dim=8, options={"channels": 4})
    assert config.seed == 2
    with pytest.raises(WspaceError, match="config.json: unknown zoo setting"):
        config_from_dict({**stored, "zoo": {"models": 8}}, "config.json")



def test_a_configuration_stored_before_the_schedule_fractions_keeps_its_zoo():
    """A complete config.json written before snapshot_fractions, lr_fractions and language_draw
    existed (the quick preset then: 128 networks, the paper's schedule, languages drawn uniformly)
    names the zoo it was run on, not today's quick zoo."""
    stored = json.loads(json.dumps(attrs.asdict(resolve(preset="quick"))))
    stored["zoo"] = {key: value for key, value in stored["zoo"].items()
                     if key not in ("snapshot_fractions", "lr_fractions")}
    stored["zoo"].update(num_models=128, chunk_size=128, steps=1500, task_settings={"num_eval_strings": 500})
    config = config_from_dict(stored, "config.json")
    assert _digest(zoo_config_for(config)) == "b47b6aa6cc1f73be"  # the quick zoo at 5b98d1a .. 1107c07
    assert zoo_path_for(config).name == "lstm-formal_languages-a37250ad0ad4"
    again = config_from_dict(json.loads(json.dumps(attrs.asdict(config))), "config.json")
    assert again == config  # stored again today, it reads back the same


def test_a_configuration_stored_before_the_learning_rate_schedule_resumes_at_a_constant_rate():
    """The quick preset decays its rate along a cosine since issue #13; a run stored before the
    schedule existed trained at a constant rate and continues at it."""
    stored = json.loads(json.dumps(attrs.asdict(resolve(preset="quick"))))
    assert stored["pretrain"].pop("lr_schedule") == "cosine" and stored["pretrain"].pop("warmup_steps") == 100
    assert stored["pretrain"].pop("selection_metric") == "published_total_variation"
    config = config_from_dict(stored, "config.json")
    assert (config.pretrain.lr_schedule, config.pretrain.warmup_steps) == ("constant", 0)
    assert config.pretrain.selection_metric == "objective"  # the trained objective's
    assert config.pretrain.lr == resolve(preset="quick").pretrain.lr

def test_every_setting_is_logged():
    params = flatten_params(attrs.asdict(resolve(preset="smoke")))
    for name, section in SECTIONS.items():
        fields = [f.name for f in attrs.fields(section) if f.name not in ("task_settings", "options")]
        assert all(f"{name}.{field}" in params for field in fields), name
    assert params["zoo.task_settings.num_eval_strings"] == "32" and params["downstream.frozen_steps"] == "50"


def test_the_documented_configuration_file_resolves(tmp_path):
    text = (ROOT / "docs" / "architecture.md").read_text()
    toml = tmp_path / "run.toml"
    toml.write_text(re.search(r"```toml\n(.*?)```", text, re.S).group(1))
    config = resolve(load_toml(toml))
    assert (config.preset, config.encoder.name, config.zoo.num_models, config.pretrain.steps) == ("smoke", "dwsnet", 24, 60)
    assert config.zoo.task_settings["max_n"] == 6 and config.downstream.ood_half == "network"
    from wspace.validation import encoder_context_for
    from wspace_core.plugins import encoders

    encoders().get(config.encoder.name)(encoder_context_for(config))  # its options fit the encoder
