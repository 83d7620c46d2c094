"""The four mechanistic weight encoders of the paper, as its published code builds them, sized
from the architecture's parameter layout and symmetry spec only (no parameter is known by name):

- ``layerwise_statistics``: per-tensor mean, variance and quantiles -> MLP (permutation invariant)
- ``flattened_weights``: all weights flattened -> MLP (permutation augmentation)
- ``parameter_transformer``: one token per weight-matrix row (with its bias) -> transformer
  (permutation augmentation)
- ``dwsnet``: the published permutation-equivariant weight-space layers -> invariant pooling -> MLP

wspace's own variants are options: ``input_scale`` (every encoder), ``tokens=neurons`` and
``norm_first`` (parameter transformer), ``layer=full`` (DWSNet). Every encoder returns z
L2-normalised (unit norm per model)."""

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
