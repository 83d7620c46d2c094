"""Flattened weights: every parameter, flattened in layout order, into an MLP. Sees neuron order,
so training uses random hidden-neuron permutations as augmentation."""

from __future__ import annotations

import attrs
import torch

from wspace_core.architecture import Params
from wspace_core.encoder import EncoderContext
from wspace_encoders.base import WeightEncoder, mlp
from wspace_encoders.config import WeightEncoderConfig, positive_int


@attrs.frozen
class FlattenedWeightsConfig(WeightEncoderConfig):
    """MLP on the flat weight vector: ``num_layers`` hidden layers of width ``hidden``; the paper
    preset is the published ``flat`` config, 128 x 3 (1 797 264 parameters on the formal-language
    zoo, 1 978 000 on tiled MNIST, as the published ``FlatParameterEncoder``)."""

    hidden: int = attrs.field(default=64, converter=positive_int)
    num_layers: int = attrs.field(default=2, converter=positive_int)

    presets = {
        "smoke": {"hidden": 32, "num_layers": 2},
        "quick": {"hidden": 64, "num_layers": 2},
        "paper": {"hidden": 128, "num_layers": 3},
    }


class FlattenedWeights(WeightEncoder):
    """(M, P) flat weights -> MLP -> z."""

    name = "flattened_weights"
    role = "flattened_weights"  # the paper's encoder it reproduces
    config_class = FlattenedWeightsConfig
    permutation_augmentation = True

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        cfg = self.config
        self.mlp = mlp([context.layout.num_params] + [cfg.hidden] * cfg.num_layers + [context.z_dim])

    def embed(self, params: Params) -> torch.Tensor:
        return self.mlp(self.context.layout.flatten(params))  # (M, P) -> (M, Z)
