"""The encoder contract: weights of M networks -> z of shape (M, Z).

*Mechanistic* encoders read the parameters. *Functionalist* encoders receive a ``BlackBox``:
a handle that steps the networks on inputs the encoder chooses and returns their outputs.
It holds no reference to the weights that an encoder could read: the weights live only in
the closures of its step function, so a functionalist encoder is architecture-agnostic by type.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Literal

import attrs
import torch
from torch import nn

from wspace_core.architecture import Architecture, ParameterLayout, Params, Sizes
from wspace_core.symmetry import SymmetrySpec


@attrs.frozen
class EncoderContext:
    """Everything an encoder may size itself from. Mechanistic encoders use the layout and
    symmetry; functionalist ones only the input/output description."""

    layout: ParameterLayout
    symmetry: SymmetrySpec
    sizes: Sizes
    input_size: int
    output_size: int
    input_kind: Literal["onehot", "continuous"]
    output_kind: Literal["categorical", "continuous"]
    sequence_length: int
    z_dim: int = 16
    preset: str = "quick"
    #: encoder-specific options (e.g. {"probing_strategy": "interactive"}); plain data
    options: dict[str, Any] = attrs.field(factory=dict)


class BlackBox:
    """Steps M networks on chosen inputs. Exposes sizes and ``step``; never the weights."""

    __slots__ = ("num_models", "input_size", "output_size", "input_kind", "output_kind",
                 "_step", "_initial_state")

    def __init__(self, arch: Architecture, params: Params, input_kind: str = "onehot",
                 output_kind: str = "categorical"):
        def step(x, state):
            return arch.step(params, x, state)

        def initial_state(batch_size):
            return arch.initial_state(params, batch_size)

        first = next(iter(params.values()))
        self.num_models = first.shape[0]
        self.input_size = arch.sizes.input_size
        self.output_size = arch.sizes.output_size
        self.input_kind, self.output_kind = input_kind, output_kind
        self._step: Callable = step
        self._initial_state: Callable = initial_state

    def initial_state(self, batch_size: int):
        """Opaque state for ``batch_size`` parallel queries per network."""
        return self._initial_state(batch_size)

    def step(self, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
        """x: (M, B, input_size) -> (y: (M, B, output_size) raw outputs, next state).
        Differentiable with respect to x."""
        return self._step(x, state)


class Encoder(nn.Module):
    """Base of all encoders. Subclasses are registered as factories: ``cls(context)``."""

    kind: ClassVar[Literal["mechanistic", "functionalist"]]
    #: the part it plays in a comparison: "baseline", or which of the paper's encoders it reproduces
    role: ClassVar[str | None] = None
    #: whether training should apply random hidden-neuron permutations as augmentation
    permutation_augmentation: ClassVar[bool] = False

    def __init__(self, context: EncoderContext):
        super().__init__()
        self.context = context

    def settings(self) -> dict[str, Any]:
        """The encoder's configuration as resolved (its preset with ``context.options`` applied),
        as plain data. Given back as the options, at any preset, it builds the same encoder: a
        stored encoder is rebuilt from it, so a preset changed later does not change it. {} for
        an encoder whose preset and options decide nothing."""
        return {}


class MechanisticEncoder(Encoder):
    kind = "mechanistic"

    def forward(self, params: Params) -> torch.Tensor:  # {name: (M, *shape)} -> (M, Z)
        raise NotImplementedError


class FunctionalistEncoder(Encoder):
    kind = "functionalist"

    def forward(self, box: BlackBox) -> torch.Tensor:  # (M, Z)
        raise NotImplementedError


def encode(encoder: Encoder, arch: Architecture, params: Params, input_kind: str = "onehot",
           output_kind: str = "categorical") -> torch.Tensor:
    """z = E(θ) for M networks, giving each kind of encoder only what its contract allows."""
    if encoder.kind == "mechanistic":
        return encoder(params)
    return encoder(BlackBox(arch, params, input_kind, output_kind))
