"""An encoder's resolved settings (``Encoder.settings``): plain data that, given back as the
options, builds the same encoder at any preset; the run records them and a stored encoder is
rebuilt from them, so a preset changed later does not change an encoder already trained."""

from __future__ import annotations

import json

import attrs
import pytest
import torch

from wspace.experiment.encoder_file import read_encoder, restore_encoder, save_encoder
from wspace.training.pretrain import PretrainResult, build_encoder, context_for
from wspace.training.emulation import Emulator
from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace.config import resolve

ENCODERS = sorted(plugins.encoders().names())


def _task_and_arch():
    task = plugins.task_families().get("formal_languages")(num_eval_strings=16)
    arch = plugins.architectures().get("lstm")(Sizes(task.input_size, 8, task.output_size))
    return task, arch


def _shapes(encoder) -> dict:
    return {name: tuple(value.shape) for name, value in encoder.state_dict().items()}


@pytest.mark.parametrize("name", ENCODERS)
def test_the_settings_rebuild_the_encoder_at_another_preset(name):
    task, arch = _task_and_arch()
    quick = build_encoder(name, context_for(arch, task, 4, "quick"))
    settings = json.loads(json.dumps(quick.settings()))  # as results.json and encoder.pt hold them
    again = build_encoder(name, context_for(arch, task, 4, "smoke", settings))
    assert again.settings() == quick.settings()
    assert _shapes(again) == _shapes(quick)


def test_the_probing_settings_name_what_decides_the_encoder():
    task, arch = _task_and_arch()
    settings = build_encoder("interactive_probing", context_for(arch, task, 4, "quick")).settings()
    assert settings["answers"] == "log_probs" and settings["probing_strategy"] == "interactive"
    assert settings["length"] == 16 and settings["num_probes"] == 4
    assert build_encoder("no_information", context_for(arch, task, 4, "quick")).settings() == {}


def test_a_stored_encoder_keeps_its_settings_when_the_preset_changes(tmp_path, monkeypatch):
    from test_compare import tiny_zoo
    from wspace_probing import config as probing_config

    zoo = tiny_zoo(tmp_path / "zoo")
    config = resolve(preset="quick", encoder={"name": "interactive_probing", "z_dim": 4})
    encoder = build_encoder("interactive_probing", context_for(zoo.architecture(), zoo.task_family(), 4, "quick"))
    result = PretrainResult(encoder=encoder, emulator=Emulator(6, 6, 4, hidden=8, layers=1), best_step=0,
                            best_validation=0.0, metrics={}, history=[], steps_done=0, stopped_early=False,
                            seconds=0.0)
    path = save_encoder(tmp_path, result, config, zoo)
    quick = probing_config.PRESETS["quick"]
    monkeypatch.setitem(probing_config.PRESETS, "quick", attrs.evolve(quick, answers="raw", num_probes=2))
    restored = restore_encoder(read_encoder(path), zoo)
    assert restored.settings() == encoder.settings()
    for a, b in zip(restored.state_dict().values(), encoder.state_dict().values()):
        torch.testing.assert_close(a, b)
    # a file written before the settings were stored is rebuilt at today's preset, as before
    monkeypatch.setitem(probing_config.PRESETS, "quick", attrs.evolve(quick, answers="raw"))
    payload = torch.load(path, weights_only=True)
    del payload["encoder_settings"]
    torch.save(payload, path)
    assert restore_encoder(read_encoder(path), zoo).settings() == {**encoder.settings(), "answers": "raw"}
