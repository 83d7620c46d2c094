"""Parameter transformer: each neuron's incoming weights plus biases is a token.

Tokens come from the row sets of the weight space (``structure.row_sets``): every parameter whose
axis 0 is permuted by one neuron group contributes its row to that group's tokens (for an LSTM
layer: the rows of W_ih, W_hh and both biases), and parameters with fixed rows of equal length
(the read-out weight and bias) form one more set. Each set has its own linear embedding to the
model width; a learned positional encoding per token and a learned summary token are added, an
encoder-only transformer runs, and z is read from the summary token. Positional encodings make
it sensitive to neuron order, so training uses permutation augmentation."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from wspace_core.architecture import Params
from wspace_core.encoder import EncoderContext
from wspace_core.registry import WspaceError
from wspace_encoders.base import WeightEncoder
from wspace_encoders.config import PresetConfig, boolean, non_negative_float, positive_int
from wspace_encoders.structure import row_sets


@attrs.frozen
class ParameterTransformerConfig(PresetConfig):
    """``width`` model width, ``num_layers`` encoder layers of ``num_heads`` heads and a feed-forward
    block of width ``mlp``. ``merge_blocks``: one token per neuron with its gate blocks side by
    side (shorter sequences) instead of one token per (gate block, neuron) row as in the paper."""

    width: int = attrs.field(default=64, converter=positive_int)
    num_layers: int = attrs.field(default=2, converter=positive_int)
    num_heads: int = attrs.field(default=2, converter=positive_int)
    mlp: int = attrs.field(default=128, converter=positive_int)
    dropout: float = attrs.field(default=0.0, converter=non_negative_float)
    merge_blocks: bool = attrs.field(default=False, converter=boolean)

    presets = {
        "smoke": {"width": 32, "num_layers": 1, "num_heads": 2, "mlp": 64, "merge_blocks": True},
        "quick": {"width": 64, "num_layers": 2, "num_heads": 2, "mlp": 128, "merge_blocks": True},
        # ~1.25 M parameters (appendix): width 128, 6 layers, 2 heads, feed-forward 4 x width
        "paper": {"width": 128, "num_layers": 6, "num_heads": 2, "mlp": 512, "merge_blocks": False},
    }

    def __attrs_post_init__(self):
        if self.width % self.num_heads:
            raise WspaceError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")


class ParameterTransformer(WeightEncoder):
    name = "parameter_transformer"
    config_class = ParameterTransformerConfig
    permutation_augmentation = True

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        cfg = self.config
        self.row_sets = row_sets(self.structures, merge_blocks=cfg.merge_blocks)
        self.embeddings = nn.ModuleList(nn.Linear(s.row_features, cfg.width) for s in self.row_sets)
        self.num_tokens = sum(s.num_rows for s in self.row_sets) + 1  # + the summary token
        self.summary_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.positional = nn.Parameter(torch.randn(1, self.num_tokens, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.width, nhead=cfg.num_heads, dim_feedforward=cfg.mlp, dropout=cfg.dropout,
            batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers, norm=nn.LayerNorm(cfg.width),
                                                 enable_nested_tensor=False)
        self.readout = nn.Linear(cfg.width, context.z_dim)

    def tokens(self, params: Params) -> torch.Tensor:
        """{name: (M, *shape)} -> (M, num_tokens, width): row tokens then the summary token."""
        rows = [embed(s.rows(params)) for s, embed in zip(self.row_sets, self.embeddings)]  # (M, R_s, D)
        num_models = rows[0].shape[0]
        tokens = torch.cat(rows + [self.summary_token.expand(num_models, -1, -1)], dim=1)  # (M, T, D)
        return tokens + self.positional

    def embed(self, params: Params) -> torch.Tensor:
        out = self.transformer(self.tokens(params))  # (M, T, D)
        return self.readout(out[:, -1])  # summary token -> (M, Z)
