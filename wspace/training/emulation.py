"""The emulator A(x, z): an LSTM that imitates network f_θ given only z = E(θ).

It reads the stored rollout inputs with teacher forcing; a linear projection of z is added to its
input embedding, at the first (BOS) step only (``condition="bos"``, the published default,
``emulator_only_condition_bos=1``) or at every step (``condition="every_step"``, the published
option ``--emulator_only_condition_bos 0``), so z is the only thing that tells one network from
another. ``open_forget_gates`` sets the forget-gate biases to 1 at initialisation (the published
``EmulatorLSTM.open_forget_gates``: the argparse default, off in the published configs).
"""

from __future__ import annotations

import torch
from torch import nn

from wspace_core.architecture import Architecture, ParameterLayout, Params, ParamSpec, Sizes
from wspace_core.symmetry import SymmetrySpec
from wspace_core.validators import one_of
from wspace.config import EMULATOR_CONDITIONS as CONDITIONS


class Emulator(nn.Module):
    def __init__(self, input_size: int, output_size: int, z_dim: int, hidden: int = 256, layers: int = 2,
                 condition: str = "bos", open_forget_gates: bool = False):
        super().__init__()
        one_of(*CONDITIONS).require("emulator condition", condition)
        self.input_size, self.output_size, self.z_dim = input_size, output_size, z_dim
        self.condition = condition
        self.embed = nn.Linear(input_size, hidden)
        self.z_proj = nn.Linear(z_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.readout = nn.Linear(hidden, output_size)
        if open_forget_gates:
            self._open_forget_gates()

    @classmethod
    def from_config(cls, config, input_size: int, output_size: int, z_dim: int) -> "Emulator":
        """The emulator a ``PretrainConfig`` describes (its ``emulator_*`` fields)."""
        return cls(input_size, output_size, z_dim, config.emulator_hidden, config.emulator_layers,
                   config.emulator_condition, config.emulator_open_forget_gates)

    @torch.no_grad()
    def _open_forget_gates(self) -> None:
        """Forget-gate biases (torch's gate order i, f, g, o: the second block) set to 1."""
        h = self.lstm.hidden_size
        for layer in range(self.lstm.num_layers):
            for kind in ("ih", "hh"):
                getattr(self.lstm, f"bias_{kind}_l{layer}")[h:2 * h] = 1.0

    def _embed(self, x: torch.Tensor, z: torch.Tensor, first_step: bool) -> torch.Tensor:
        """x: (S, T, I), z: (S, Z) -> (S, T, hidden) LSTM inputs; ``first_step``: x starts at BOS."""
        e = self.embed(x)  # (S, T, hidden)
        zp = self.z_proj(z).unsqueeze(1)  # (S, 1, hidden)
        if self.condition == "every_step":
            return e + zp
        if not first_step:
            return e
        return torch.cat([e[:, :1] + zp, e[:, 1:]], dim=1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: (S, T, I) network inputs, z: (S, Z) -> (S, T, O) raw outputs (logits or values)."""
        hs, _ = self.lstm(self._embed(x, z, first_step=True))
        return self.readout(hs)

    def step(self, x: torch.Tensor, z: torch.Tensor, state=None):
        """One step for free-running generation. x: (S, I), z: (S, Z); state None: the first step."""
        hs, state = self.lstm(self._embed(x.unsqueeze(1), z, first_step=state is None), state)
        return self.readout(hs[:, 0]), state


class EmulatorArchitecture(Architecture):
    """The emulator seen through the Architecture contract, so a task family can score it
    exactly as it scores the original networks (emulation fidelity). Its only per-"model"
    parameter is z: params = {"z": (M, Z)}; the emulator's own weights are shared."""

    name = "emulator"

    def __init__(self, emulator: Emulator, sizes: Sizes):
        super().__init__(sizes)
        self.emulator = emulator

    @property
    def layout(self) -> ParameterLayout:
        return ParameterLayout([ParamSpec("z", (self.emulator.z_dim,))])

    @property
    def symmetry(self) -> SymmetrySpec:
        return SymmetrySpec(())

    def init(self, num_models, generator=None, device="cpu", dtype=torch.float32) -> Params:
        """z = 0 for every model: the emulation of a network the emulator knows nothing about."""
        return {"z": torch.zeros(num_models, self.emulator.z_dim, device=device, dtype=dtype)}

    def initial_state(self, params: Params, batch_size: int):
        return None  # the emulator's LSTM state; None before the first step

    def step(self, params: Params, x: torch.Tensor, state):
        """x: (M, B, I) -> (M, B, O)."""
        M, B, _ = x.shape
        z = params["z"].repeat_interleave(B, dim=0)  # (M*B, Z)
        y, state = self.emulator.step(x.reshape(M * B, -1), z, state)
        return y.reshape(M, B, -1), state

    def forward(self, params: Params, xs: torch.Tensor, state=None):
        if state is not None:
            return super().forward(params, xs, state)
        M, B, T, _ = xs.shape
        z = params["z"].repeat_interleave(B, dim=0)
        ys = self.emulator(xs.reshape(M * B, T, -1), z)
        return ys.reshape(M, B, T, -1), None
