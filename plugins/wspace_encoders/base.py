"""What the four mechanistic encoders share: config from preset + options, the optional input
scaling per parameter tensor, a check of the incoming parameters, and the final L2 normalisation
of z."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from wspace_core.architecture import Params
from wspace_core.encoder import EncoderContext, MechanisticEncoder
from wspace_core.registry import WspaceError
from wspace_encoders.config import WeightEncoderConfig
from wspace_encoders.structure import ParamStructure, param_structures, reference_fan_in


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class InputScale(nn.Module):
    """Multiplies each parameter tensor by a learned scale, initialised to √fan-in so that weights
    at a typical initialisation (std ~ 1/√fan-in) enter the encoder with entries of order one.
    A wspace option (``input_scale=true``): the paper and its published code feed the raw weights."""

    def __init__(self, structures: tuple[ParamStructure, ...]):
        super().__init__()
        fan_in = reference_fan_in(structures)
        self.names = [p.name for p in structures]
        self.log_scale = nn.Parameter(torch.tensor([0.5 * math.log(fan_in[n]) for n in self.names]))

    def forward(self, params: Params) -> Params:
        scale = self.log_scale.exp()  # (num parameter tensors,)
        return {name: params[name] * scale[i] for i, name in enumerate(self.names)}


class WeightEncoder(MechanisticEncoder):
    """Base of the bundled mechanistic encoders. Subclasses set ``config_class`` and implement
    ``embed(params) -> (M, z_dim)``; ``forward`` returns z L2-normalised (unit length per model),
    as the published training normalises every encoder's output (``normalize_embedding``).
    The parameters reach ``embed`` as they are, or scaled by ``InputScale`` when the option
    ``input_scale`` is on."""

    #: registered name, used in error messages
    name: ClassVar[str] = ""
    config_class: ClassVar[type[WeightEncoderConfig]]

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        self.config = self.config_class.from_options(context.preset, dict(context.options), self.name)
        self.structures = param_structures(context.layout, context.symmetry)
        self.input_scale = InputScale(self.structures) if self.config.input_scale else None

    def settings(self) -> dict:
        """The configuration this encoder was built with (its preset with the options applied)."""
        return attrs.asdict(self.config)

    def embed(self, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, params: Params) -> torch.Tensor:
        """{name: (M, *shape)} -> z (M, z_dim), each row of unit L2 norm."""
        self._check(params)
        if self.input_scale is not None:
            params = self.input_scale(params)
        z = self.embed(params)  # (M, Z)
        return F.normalize(z, dim=-1)

    def _check(self, params: Params) -> None:
        missing = [p.name for p in self.structures if p.name not in params]
        if missing:
            raise WspaceError(
                f"encoder {self.name!r} needs parameters {', '.join(missing)} (the architecture's layout); "
                f"got {', '.join(params) or 'none'}"
            )
        num_models = params[self.structures[0].name].shape[0]
        for p in self.structures:
            got = tuple(params[p.name].shape)
            if got != (num_models, *p.shape):
                raise WspaceError(
                    f"encoder {self.name!r}: parameter {p.name!r} must have shape "
                    f"(models, {', '.join(map(str, p.shape))}) = {(num_models, *p.shape)}, got {got}"
                )
