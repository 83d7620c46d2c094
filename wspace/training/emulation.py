"""The emulator A(x, z): an LSTM that imitates network f_θ given only z = E(θ).

It reads the stored rollout inputs with teacher forcing; a linear projection of z is added to
its first (BOS) input embedding, so z is the only thing that tells one network from another.
"""

from __future__ import annotations

import torch
from torch import nn

from wspace_core.architecture import Architecture, ParameterLayout, Params, ParamSpec, Sizes
from wspace_core.symmetry import SymmetrySpec


class Emulator(nn.Module):
    def __init__(self, input_size: int, output_size: int, z_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.input_size, self.output_size, self.z_dim = input_size, output_size, z_dim
        self.embed = nn.Linear(input_size, hidden)
        self.z_proj = nn.Linear(z_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.readout = nn.Linear(hidden, output_size)

    def _embed(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        e = self.embed(x)  # (S, T, hidden)
        if z is not None:  # condition the BOS step only
            e = torch.cat([e[:, :1] + self.z_proj(z).unsqueeze(1), e[:, 1:]], dim=1)
        return e

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: (S, T, I) network inputs, z: (S, Z) -> (S, T, O) raw outputs (logits or values)."""
        hs, _ = self.lstm(self._embed(x, z))
        return self.readout(hs)

    def step(self, x: torch.Tensor, z: torch.Tensor | None, state=None):
        """One step for free-running generation. x: (S, I); z given at the first step only."""
        hs, state = self.lstm(self._embed(x.unsqueeze(1), z), state)
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
        return (True, None)  # (first step?, LSTM state)

    def step(self, params: Params, x: torch.Tensor, state):
        """x: (M, B, I) -> (M, B, O)."""
        first, lstm_state = state
        M, B, _ = x.shape
        z = params["z"].repeat_interleave(B, dim=0) if first else None  # (M*B, Z)
        y, lstm_state = self.emulator.step(x.reshape(M * B, -1), z, lstm_state)
        return y.reshape(M, B, -1), (False, lstm_state)

    def forward(self, params: Params, xs: torch.Tensor, state=None):
        if state is not None:
            return super().forward(params, xs, state)
        M, B, T, _ = xs.shape
        z = params["z"].repeat_interleave(B, dim=0)
        ys = self.emulator(xs.reshape(M * B, T, -1), z)
        return ys.reshape(M, B, T, -1), None
