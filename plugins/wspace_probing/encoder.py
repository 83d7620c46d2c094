"""The probing encoders of Herrmann et al. 2024, §3: functionalist, they see only a black box.

Per step t the probing strategy chooses P probe inputs for every network (E_I), the black box
steps all M networks on them, the output MLP E_O reads the P answers of a network jointly (their
concatenation), and the core LSTM E_R accumulates one state per network. z is a linear map of
E_R's final output, L2-normalised. Categorical answers are read as log-probabilities (the network's
function is its distribution; a constant shift of its logits is not a different function).
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wspace_core import plugins
from wspace_core.encoder import BlackBox, EncoderContext, FunctionalistEncoder
from wspace_core.probing import ProbingContext, ProbingStrategy
from wspace_core.registry import WspaceError
from wspace_probing.config import ProbingConfig, resolve_config
from wspace_probing.mlp import mlp


@attrs.frozen
class ProbingTrace:
    """What one probing pass saw: z and, per step, the probes sent and the raw answers."""

    z: torch.Tensor  # (M, Z)
    probes: torch.Tensor  # (M, T, P, I)
    outputs: torch.Tensor  # (M, T, P, O)


class ProbingEncoder(FunctionalistEncoder):
    """A probing encoder with any registered strategy (``context.options["probing_strategy"]``)."""

    #: the strategy used when the options name none
    default_strategy: ClassVar[str] = "static"

    def __init__(self, context: EncoderContext):
        super().__init__(context)
        self.config: ProbingConfig = resolve_config(context, self.default_strategy)
        c = self.config
        self.probing_context = ProbingContext(
            num_probes=c.num_probes, length=c.length, input_size=context.input_size,
            output_size=context.output_size, input_kind=context.input_kind,
            summary_size=c.core_hidden, hidden_size=c.mlp_hidden, hidden_layers=c.mlp_layers)
        factory = plugins.probing_strategies().get(c.probing_strategy)
        self.strategy = factory(self.probing_context)
        if not isinstance(self.strategy, ProbingStrategy):
            raise WspaceError(f"probing strategy {c.probing_strategy!r} built a "
                              f"{type(self.strategy).__name__}, not a wspace_core.probing.ProbingStrategy")
        self.output_mlp = mlp(c.num_probes * context.output_size, c.mlp_hidden, c.mlp_layers,
                              c.mlp_hidden)  # E_O
        self.core = nn.LSTM(c.mlp_hidden, c.core_hidden, c.core_layers, batch_first=True)  # E_R
        self.to_z = nn.Linear(c.core_hidden, context.z_dim)

    def forward(self, box: BlackBox) -> torch.Tensor:
        """(M, Z) L2-normalised representations of the M networks behind ``box``."""
        return self._probe(box, record=False, stepwise=False)[0]

    def trace(self, box: BlackBox, stepwise: bool = False) -> ProbingTrace:
        """z together with the probes and answers of every step. ``stepwise`` forces the
        step-by-step loop even for a non-adaptive strategy (same result, slower)."""
        z, probes, outputs = self._probe(box, record=True, stepwise=stepwise)
        return ProbingTrace(z=z, probes=probes, outputs=outputs)

    # -- internals -------------------------------------------------------------------------

    def _answers(self, y: torch.Tensor) -> torch.Tensor:
        """Raw outputs (..., O) -> what E_O reads."""
        return y.log_softmax(-1) if self.context.output_kind == "categorical" else y

    def _check_box(self, box: BlackBox) -> None:
        if (box.input_size, box.output_size) != (self.context.input_size, self.context.output_size):
            raise WspaceError(
                f"this probing encoder was built for networks with {self.context.input_size} inputs "
                f"and {self.context.output_size} outputs, but the black box has {box.input_size} "
                f"and {box.output_size}; build the encoder from the zoo's task and architecture")

    def _check_probes(self, probes: torch.Tensor, expected: tuple[int, ...]) -> None:
        if tuple(probes.shape) != expected:
            raise WspaceError(f"probing strategy {self.config.probing_strategy!r} returned probes of "
                              f"shape {tuple(probes.shape)}, expected {expected}")

    @staticmethod
    def _core_step(feat: torch.Tensor, states: list, weights: list) -> tuple[torch.Tensor, list]:
        """One step of E_R: feat (M, F) -> top-layer output (M, H), new (h, c) per layer.
        The same weights as ``self.core`` over a whole sequence; torch.lstm_cell per layer avoids
        the slow one-step path of the fused CPU LSTM."""
        inp, new = feat, []
        for layer, (h, c) in enumerate(states):  # (M, H) each
            h, c = torch.lstm_cell(inp, (h, c), *weights[layer])
            new.append((h, c))
            inp = h
        return inp, new

    @property
    def _core_weights(self) -> list[tuple[torch.Tensor, ...]]:
        return [tuple(getattr(self.core, f"{kind}_l{layer}")
                      for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                for layer in range(self.config.core_layers)]

    def _probe(self, box: BlackBox, record: bool, stepwise: bool):
        self._check_box(box)
        c = self.config
        M, P, T, I = box.num_models, c.num_probes, c.length, self.context.input_size
        summary = self.to_z.weight.new_zeros(M, c.core_hidden)  # (M, H) zeros before any answer
        state = box.initial_state(P)
        if not (self.strategy.adaptive or stepwise):
            # probes known up front: step the networks, then E_O and E_R over the whole sequence
            probes = self.strategy.all_probes(summary)  # (M, T, P, I)
            self._check_probes(probes, (M, T, P, I))
            outs = []
            for x in probes.unbind(dim=1):  # (M, P, I)
                y, state = box.step(x, state)
                outs.append(y)
            outputs = torch.stack(outs, dim=1)  # (M, T, P, O)
            feats = self.output_mlp(rearrange(self._answers(outputs), "m t p o -> m t (p o)"))
            hs, _ = self.core(feats)  # (M, T, H)
            final = hs[:, -1]
        else:
            core_state = [(summary, summary)] * c.core_layers  # (h, c) per layer, each (M, H)
            weights = self._core_weights
            last, sent, outs = None, [], []
            for t in range(T):
                x = self.strategy(t, summary, last)  # (M, P, I)
                self._check_probes(x, (M, P, I))
                y, state = box.step(x, state)  # (M, P, O)
                feat = self.output_mlp(rearrange(self._answers(y), "m p o -> m (p o)"))
                summary, core_state = self._core_step(feat, core_state, weights)  # (M, H)
                last = y
                if record:
                    sent.append(x)
                    outs.append(y)
            final = summary
            probes = torch.stack(sent, dim=1) if record else None
            outputs = torch.stack(outs, dim=1) if record else None
        z = F.normalize(self.to_z(final), dim=-1)  # (M, Z)
        return z, probes, outputs


class NoninteractiveProbingEncoder(ProbingEncoder):
    """Probing with learned static sequences (paper: non-interactive probing)."""

    default_strategy = "static"


class InteractiveProbingEncoder(ProbingEncoder):
    """Probing whose inputs depend on the answers so far (paper: interactive probing)."""

    default_strategy = "interactive"
