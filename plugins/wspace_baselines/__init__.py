"""Reference encoders that every real encoder must beat."""

import torch
from torch import nn

from wspace_core.encoder import MechanisticEncoder
from wspace_core.hookspecs import hookimpl


class NoInformation(MechanisticEncoder):
    """The floor: one learned z for every network, so the emulator can only learn the average behaviour."""

    role = "baseline"

    def __init__(self, context):
        super().__init__(context)
        self.z = nn.Parameter(torch.randn(context.z_dim) / context.z_dim**0.5)

    def forward(self, params):
        num_models = next(iter(params.values())).shape[0]
        return self.z.expand(num_models, -1)


@hookimpl
def register_encoders(register):
    register("no_information", NoInformation)
