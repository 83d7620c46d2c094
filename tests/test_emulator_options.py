"""The emulator's published options: where z enters (first step or every step) and opened
forget gates; free-running steps give what teacher forcing gives."""

import pytest
import torch

from wspace.config import PretrainConfig
from wspace.training.emulation import Emulator
from wspace_core.registry import WspaceError


def _teacher_forced_equals_stepped(emulator: Emulator) -> None:
    x, z = torch.randn(3, 5, 4), torch.randn(3, 2)
    full = emulator(x, z)  # (3, 5, 6)
    state, steps = None, []
    for t in range(5):
        y, state = emulator.step(x[:, t], z, state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full)


@pytest.mark.parametrize("condition", ["bos", "every_step"])
def test_stepping_matches_teacher_forcing(condition):
    torch.manual_seed(0)
    _teacher_forced_equals_stepped(Emulator(4, 6, 2, hidden=8, layers=2, condition=condition))


def test_bos_conditioning_reads_z_at_the_first_step_only():
    torch.manual_seed(0)
    emulator = Emulator(4, 6, 2, hidden=8, layers=1, condition="bos")
    x, z = torch.randn(1, 3, 4), torch.randn(1, 2)
    _, state = emulator.step(x[:, 0], z, None)
    later_a, _ = emulator.step(x[:, 1], z, state)
    later_b, _ = emulator.step(x[:, 1], torch.randn(1, 2) * 10, state)
    torch.testing.assert_close(later_a, later_b)  # a later z changes nothing


def test_every_step_conditioning_reads_z_at_every_step():
    torch.manual_seed(0)
    emulator = Emulator(4, 6, 2, hidden=8, layers=1, condition="every_step")
    x, z = torch.randn(1, 3, 4), torch.randn(1, 2)
    _, state = emulator.step(x[:, 0], z, None)
    later_a, _ = emulator.step(x[:, 1], z, state)
    later_b, _ = emulator.step(x[:, 1], z + 1.0, state)
    assert not torch.allclose(later_a, later_b)


def test_open_forget_gates_sets_the_second_gate_block_to_one():
    emulator = Emulator(4, 6, 2, hidden=8, layers=2, open_forget_gates=True)
    for layer in range(2):
        for kind in ("ih", "hh"):
            bias = getattr(emulator.lstm, f"bias_{kind}_l{layer}")
            assert torch.all(bias[8:16] == 1.0)
            assert not torch.all(bias[:8] == 1.0)
    closed = Emulator(4, 6, 2, hidden=8, layers=2)
    assert not torch.all(closed.lstm.bias_ih_l0[8:16] == 1.0)


def test_from_config_reads_the_emulator_fields():
    config = PretrainConfig(emulator_hidden=12, emulator_layers=1, emulator_condition="every_step",
                            emulator_open_forget_gates=True)
    emulator = Emulator.from_config(config, 6, 6, 16)
    assert (emulator.lstm.hidden_size, emulator.lstm.num_layers, emulator.condition) == (12, 1, "every_step")
    assert torch.all(emulator.lstm.bias_hh_l0[12:24] == 1.0)


def test_bad_emulator_options_are_refused_with_the_choices():
    with pytest.raises(WspaceError, match="emulator_condition must be one of bos, every_step"):
        PretrainConfig(emulator_condition="always")
    with pytest.raises(WspaceError, match="emulator_open_forget_gates must be true or false"):
        PretrainConfig(emulator_open_forget_gates="yes")
    with pytest.raises(WspaceError, match="emulator condition must be one of bos, every_step"):
        Emulator(4, 6, 2, condition="always")
