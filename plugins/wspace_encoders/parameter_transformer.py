"""Parameter transformer: rows of the weight matrices are tokens for an encoder-only transformer.

Tokenisation (option ``tokens``):

- ``weight_rows`` (the published ``ParameterTransformerEncoder``): one token per row of every
  weight matrix with the matching bias entry appended (``structure.weight_row_sets``): for an
  LSTM layer the 4H rows of W_ih (with b_ih) and the 4H rows of W_hh (with b_hh), each matrix
  with its own linear embedding; then the read-out's rows. LSTM 2 x 32 with 6 outputs:
  4·32·4 + 6 = 518 tokens, plus the summary token: 519.
- ``neurons`` (a wspace option): one token per neuron, everything that feeds it side by side
  (all gate blocks of W_ih, W_hh and both biases; ``structure.row_sets(merge_blocks=True)``):
  32 + 32 + 6 + 1 = 71 tokens for the same network, so much cheaper on a CPU; the smoke and
  quick presets use it, and no dropout.

A learned positional encoding per token (initialised N(0, 1), as published) and a learned summary
token (last, initialised to zeros) are added; z is a linear map of the summary token's output.
The layers are torch's ``TransformerEncoderLayer``: post-LN, ReLU, feed-forward ``mlp`` wide,
dropout 0.1 by default, as published (the option ``norm_first`` gives pre-LN layers plus a final
LayerNorm). Positional encodings make the encoder sensitive to neuron order, so training uses
permutation augmentation."""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import nn

from wspace_core.architecture import Params
from wspace_core.encoder import EncoderContext
from wspace_core.registry import WspaceError
from wspace_encoders.base import WeightEncoder
from wspace_encoders.config import WeightEncoderConfig, boolean, non_negative_float, positive_int
from wspace_encoders.structure import row_sets, weight_row_sets

TOKENISATIONS = ("weight_rows", "neurons")


def _tokens(value) -> str:
    if value not in TOKENISATIONS:
        raise WspaceError(f"tokens must be one of {', '.join(TOKENISATIONS)}, got {value!r}")
    return value


@attrs.frozen
class ParameterTransformerConfig(WeightEncoderConfig):
    """``width`` model width, ``num_layers`` encoder layers of ``num_heads`` heads, feed-forward
    block ``mlp`` wide, ``dropout`` inside the layers, ``tokens`` the tokenisation (module
    docstring), ``norm_first`` pre-LN instead of the published post-LN.

    The paper preset is the published ``parameter_transformer`` config: width 128, 6 layers,
    2 heads, feed-forward 4 x width, dropout 0.1 (torch's default, which the published code
    keeps): 1 276 688 parameters on the formal-language zoo (the paper's figure), 1 278 480 on
    tiled MNIST."""

    width: int = attrs.field(default=64, converter=positive_int)
    num_layers: int = attrs.field(default=2, converter=positive_int)
    num_heads: int = attrs.field(default=2, converter=positive_int)
    mlp: int = attrs.field(default=256, converter=positive_int)
    dropout: float = attrs.field(default=0.1, converter=non_negative_float)
    tokens: Literal["weight_rows", "neurons"] = attrs.field(default="weight_rows", converter=_tokens)
    norm_first: bool = attrs.field(default=False, converter=boolean)

    presets = {
        # CPU-sized: neuron tokens and no dropout (dropout 0.1 costs +50 % CPU time per quick step)
        "smoke": {"width": 32, "num_layers": 1, "num_heads": 2, "mlp": 64, "tokens": "neurons",
                  "dropout": 0.0},
        "quick": {"width": 64, "num_layers": 2, "num_heads": 2, "mlp": 128, "tokens": "neurons",
                  "dropout": 0.0},
        "paper": {"width": 128, "num_layers": 6, "num_heads": 2, "mlp": 512, "tokens": "weight_rows"},
    }

    def __attrs_post_init__(self):
        if self.width % self.num_heads:
            raise WspaceError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        if self.dropout >= 1:
            raise WspaceError(f"dropout must be below 1, got {self.dropout}")


class ParameterTransformer(WeightEncoder):
    """Weight-matrix rows (with their biases) as tokens -> transformer -> summary token -> z."""

    name = "parameter_transformer"
    role = "parameter_transformer"  # the paper's encoder it reproduces
    config_class = ParameterTransformerConfig
    permutation_augmentation = True

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        cfg = self.config
        if cfg.tokens == "weight_rows":
            self.row_sets = weight_row_sets(self.structures)
        else:
            self.row_sets = row_sets(self.structures, merge_blocks=True)
        self.embeddings = nn.ModuleList(nn.Linear(s.row_features, cfg.width) for s in self.row_sets)
        self.num_tokens = sum(s.num_rows for s in self.row_sets) + 1  # + the summary token
        self.summary_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.positional = nn.Parameter(torch.randn(1, self.num_tokens, cfg.width))
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.width, nhead=cfg.num_heads, dim_feedforward=cfg.mlp, dropout=cfg.dropout,
            batch_first=True, norm_first=cfg.norm_first,
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers,
                                                 norm=nn.LayerNorm(cfg.width) if cfg.norm_first else None,
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
