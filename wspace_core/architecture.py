"""The architecture contract: a recurrent cell family evaluated for many networks at once.

Every parameter tensor carries a leading *model* dimension M: one call steps M different
networks, each on its own batch of B sequences.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import attrs
import torch

from wspace_core.registry import WspaceError
from wspace_core.symmetry import SymmetrySpec
from wspace_core.validators import positive_int

Params = dict[str, torch.Tensor]  # name -> (M, *shape)
State = Any  # architecture-defined pytree of tensors with leading (M, B)


@attrs.frozen
class Sizes:
    """Sizes of one network: input, hidden, output widths and the number of recurrent layers."""

    input_size: int = attrs.field(validator=positive_int)
    hidden_size: int = attrs.field(validator=positive_int)
    output_size: int = attrs.field(validator=positive_int)
    num_layers: int = attrs.field(default=1, validator=positive_int)


@attrs.frozen
class ParamSpec:
    """One named parameter tensor of one network (no model dimension)."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@attrs.frozen
class ParameterLayout:
    """Ordered parameters; a network's flat weight vector is their concatenation in this order."""

    params: tuple[ParamSpec, ...] = attrs.field(converter=tuple)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def num_params(self) -> int:
        return sum(p.numel for p in self.params)

    def __getitem__(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def offsets(self) -> dict[str, tuple[int, int]]:
        """name -> (start, stop) in the flat vector."""
        out, start = {}, 0
        for p in self.params:
            out[p.name] = (start, start + p.numel)
            start += p.numel
        return out

    def unflatten(self, flat: torch.Tensor) -> Params:
        """(M, P) flat weights -> {name: (M, *shape)} (views, no copy)."""
        if flat.ndim != 2 or flat.shape[1] != self.num_params:
            raise WspaceError(
                f"flat weights must have shape (models, {self.num_params}), got {tuple(flat.shape)}"
            )
        return {
            name: flat[:, a:b].reshape(flat.shape[0], *self[name].shape)
            for name, (a, b) in self.offsets().items()
        }

    def flatten(self, params: Params) -> torch.Tensor:
        """{name: (M, *shape)} -> (M, P) in layout order."""
        first = params[self.params[0].name]
        return torch.cat([params[p.name].reshape(first.shape[0], p.numel) for p in self.params], dim=1)

    def as_dict(self) -> list[dict]:
        return [{"name": p.name, "shape": list(p.shape)} for p in self.params]


class Architecture(ABC):
    """A recurrent cell family at fixed sizes. Subclasses are registered as factories:
    ``cls(sizes)`` builds one.

    ``step`` is the contract; ``forward`` runs a whole sequence and may be overridden for speed.
    """

    #: short, registered name (e.g. "lstm")
    name: str = ""

    def __init__(self, sizes: Sizes):
        self.sizes = sizes

    @property
    @abstractmethod
    def layout(self) -> ParameterLayout:
        """Names, order and shapes of the parameters."""

    @property
    @abstractmethod
    def symmetry(self) -> SymmetrySpec:
        """Which parameter axes move together under a hidden-neuron permutation."""

    @abstractmethod
    def init(self, num_models: int, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Params:
        """Freshly initialised parameters of ``num_models`` networks."""

    @abstractmethod
    def initial_state(self, params: Params, batch_size: int) -> State:
        """The state before the first step, for every model and sequence (device/dtype of params)."""

    @abstractmethod
    def step(self, params: Params, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One time step. x: (M, B, input_size) -> y: (M, B, output_size), next state."""

    def forward(self, params: Params, xs: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """Whole sequences. xs: (M, B, T, input_size) -> ys: (M, B, T, output_size), final state."""
        if state is None:
            state = self.initial_state(params, xs.shape[1])
        ys = []
        for x in xs.unbind(dim=2):  # unbind, not xs[:, :, t]: keeps the backward O(T)
            y, state = self.step(params, x, state)
            ys.append(y)
        return torch.stack(ys, dim=2), state

    def describe(self) -> dict:
        """Plain-data description stored in zoo manifests."""
        return {"name": self.name, "sizes": attrs.asdict(self.sizes), "layout": self.layout.as_dict()}
