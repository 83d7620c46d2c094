"""The four mechanistic weight encoders of the paper, sized from the architecture's parameter
layout and symmetry spec only (no parameter is known by name):

- ``layerwise_statistics``: per-tensor mean, std and quantiles -> MLP (permutation invariant)
- ``flattened_weights``: all weights flattened -> MLP (permutation augmentation)
- ``parameter_transformer``: one token per neuron row -> transformer (permutation augmentation)
- ``dwsnet``: permutation-equivariant weight-space layers -> invariant pooling -> MLP

Every encoder returns z L2-normalised (unit norm per model)."""

from wspace_core.hookspecs import hookimpl
from wspace_encoders.dwsnet import DWSNet
from wspace_encoders.flattened_weights import FlattenedWeights
from wspace_encoders.layerwise_statistics import LayerwiseStatistics
from wspace_encoders.parameter_transformer import ParameterTransformer

ENCODERS = (LayerwiseStatistics, FlattenedWeights, ParameterTransformer, DWSNet)


@hookimpl
def register_encoders(register):
    for cls in ENCODERS:
        register(cls.name, cls)
