"""The small ReLU MLPs of the probing encoder (E_I, E_O)."""

from __future__ import annotations

from torch import nn


def mlp(in_size: int, hidden_size: int, hidden_layers: int, out_size: int) -> nn.Sequential:
    """in -> [Linear, ReLU] * hidden_layers -> Linear -> out (no output activation)."""
    layers: list[nn.Module] = []
    width = in_size
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_size), nn.ReLU()]
        width = hidden_size
    layers.append(nn.Linear(width, out_size))
    return nn.Sequential(*layers)
