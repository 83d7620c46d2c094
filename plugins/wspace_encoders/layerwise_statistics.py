"""Layer-wise statistics (the paper's baseline after Unterthiner et al. 2020): for every parameter
tensor — all gate blocks together — its mean, variance and quantiles, into an MLP.
Invariant to every hidden-neuron permutation by construction (statistics ignore order)."""

from __future__ import annotations

import attrs
import torch

from wspace_core.architecture import Params
from wspace_core.encoder import EncoderContext
from wspace_core.registry import WspaceError
from wspace_encoders.base import WeightEncoder, mlp
from wspace_encoders.config import WeightEncoderConfig, positive_int


def _quantiles(value) -> tuple[float, ...]:
    try:
        qs = tuple(float(q) for q in value)
    except (TypeError, ValueError):
        raise WspaceError(f"quantiles must be numbers in [0, 1], got {value!r}") from None
    if not qs or any(not 0.0 <= q <= 1.0 for q in qs):
        raise WspaceError(f"quantiles must be numbers in [0, 1], got {value!r}")
    return qs


@attrs.frozen
class LayerwiseStatisticsConfig(WeightEncoderConfig):
    """MLP on the statistics: ``num_layers`` hidden layers of width ``hidden``.

    The paper preset is 768 x 3 (1 248 016 parameters on the formal-language zoo, the paper's
    figure), the sizes the published ``training_configs.py`` gives this encoder
    (``encoder_core_hidden_size`` 768, ``encoder_core_num_layers`` 3). The published
    ``define_encoder`` reads the MLP fields (128 x 1) instead and so builds an 11 152-parameter
    encoder from that config; wspace follows the config and the paper's count."""

    hidden: int = attrs.field(default=64, converter=positive_int)
    num_layers: int = attrs.field(default=2, converter=positive_int)
    quantiles: tuple[float, ...] = attrs.field(default=(0.0, 0.25, 0.5, 0.75, 1.0), converter=_quantiles)

    presets = {
        "smoke": {"hidden": 32, "num_layers": 2},
        "quick": {"hidden": 64, "num_layers": 2},
        "paper": {"hidden": 768, "num_layers": 3},
    }


class LayerwiseStatistics(WeightEncoder):
    """Mean, variance and quantiles of each parameter tensor -> MLP -> z.

    2 + len(quantiles) numbers per tensor; the variance is unbiased, as the published code's
    ``torch.var``."""

    name = "layerwise_statistics"
    role = "layerwise_statistics"  # the paper's encoder it reproduces
    config_class = LayerwiseStatisticsConfig

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        cfg = self.config
        self.register_buffer("quantile_levels", torch.tensor(cfg.quantiles), persistent=False)
        num_features = len(self.structures) * (2 + len(cfg.quantiles))
        self.mlp = mlp([num_features] + [cfg.hidden] * cfg.num_layers + [context.z_dim])

    def statistics(self, params: Params) -> torch.Tensor:
        """{name: (M, *shape)} -> (M, tensors * (2 + quantiles)), tensors in layout order."""
        features = []
        for p in self.structures:
            x = params[p.name].flatten(1)  # (M, numel)
            var, mean = torch.var_mean(x, dim=1, correction=1 if x.shape[1] > 1 else 0)  # (M,), (M,)
            quantiles = torch.quantile(x, self.quantile_levels.to(x.dtype), dim=1).T  # (M, Q)
            features.append(torch.cat([mean[:, None], var[:, None], quantiles], dim=1))
        return torch.cat(features, dim=1)

    def embed(self, params: Params) -> torch.Tensor:
        return self.mlp(self.statistics(params))
