"""The probing encoders of Herrmann et al. 2024, §3, as the published ``InteractiveEncoder``
(``modules_rnn_encoders.py``) builds them: functionalist, they see only a black box.

A residual recurrent core reads one vector per step: a learned BOS vector, then the answers of
the probed networks, then a learned EOS vector (T + 2 steps for T probing steps). The core is a
stack of LSTM cells of width H; each layer's output is its hidden state plus its input (residual),
the next layer's input. Per probing step t the strategy chooses P probe inputs for every network
from the core's latest output (interactive) or from step t alone (static), the black box steps all
M networks on them, and the read-out E_O (``Linear(P·O, H)`` + sigmoid over the concatenated
answers of a network) gives the core's next input. After the EOS step an MLP (the z head,
``mlp_layers`` hidden layers of ``mlp_hidden``) maps the core's output to z, L2-normalised
(the published training normalises z outside the encoder).

Categorical answers are read raw (the network's logits), as published; the option
``answers=log_probs`` reads log-probabilities instead.

The published module also holds parameters that never reach z: learned initial core states h0
and c0 (the core starts from zeros), in the interactive encoder the static probe vectors (weighted
by ``static_weight=0``), and one static probe vector more than there are steps. wspace leaves
them out; the parameter-count tests say how many.
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
        H = c.core_hidden
        self.probing_context = ProbingContext(
            num_probes=c.num_probes, length=c.length, input_size=context.input_size,
            output_size=context.output_size, input_kind=context.input_kind,
            summary_size=H, hidden_size=c.mlp_hidden, hidden_layers=c.mlp_layers)
        factory = plugins.probing_strategies().get(c.probing_strategy)
        self.strategy = factory(self.probing_context)
        if not isinstance(self.strategy, ProbingStrategy):
            raise WspaceError(f"probing strategy {c.probing_strategy!r} built a "
                              f"{type(self.strategy).__name__}, not a wspace_core.probing.ProbingStrategy")
        self.bos = nn.Parameter(torch.zeros(H))  # the core's first input
        self.eos = nn.Parameter(torch.zeros(H))  # its last input
        self.read_answers = nn.Linear(c.num_probes * context.output_size, H)  # E_O, then sigmoid
        # one single-layer LSTM per core layer: whole sequences at once, or one step at a time
        # with the same weights (torch.lstm_cell)
        self.core = nn.ModuleList(nn.LSTM(H, H, 1, batch_first=True) for _ in range(c.core_layers))
        self.to_z = mlp(H, c.mlp_hidden, c.mlp_layers, context.z_dim)  # the z head

    def settings(self) -> dict:
        """The sizes, length, strategy and answers this encoder was built with."""
        return attrs.asdict(self.config)

    def forward(self, box: BlackBox) -> torch.Tensor:
        """(M, Z) L2-normalised representations of the M networks behind ``box``."""
        return self._probe(box, record=False, stepwise=False)[0]

    def trace(self, box: BlackBox, stepwise: bool = False) -> ProbingTrace:
        """z together with the probes and answers of every step. ``stepwise`` forces the
        step-by-step loop even for a non-adaptive strategy (same result, slower)."""
        z, probes, outputs = self._probe(box, record=True, stepwise=stepwise)
        return ProbingTrace(z=z, probes=probes, outputs=outputs)

    # -- internals -------------------------------------------------------------------------

    def _core_input(self, y: torch.Tensor) -> torch.Tensor:
        """Raw answers (..., P, O) -> the core's input (..., H): E_O on the P answers jointly."""
        if self.config.answers == "log_probs" and self.context.output_kind == "categorical":
            y = y.log_softmax(-1)
        return torch.sigmoid(self.read_answers(rearrange(y, "... p o -> ... (p o)")))

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

    def _core_step(self, inp: torch.Tensor, states: list) -> tuple[torch.Tensor, list]:
        """One step of the residual core: inp (M, H) -> top output (M, H), new (h, c) per layer."""
        new = []
        for lstm, (h, c) in zip(self.core, states):  # (M, H) each
            h, c = torch.lstm_cell(inp, (h, c), lstm.weight_ih_l0, lstm.weight_hh_l0,
                                   lstm.bias_ih_l0, lstm.bias_hh_l0)
            new.append((h, c))
            inp = h + inp  # residual
        return inp, new

    def _core_sequence(self, inputs: torch.Tensor) -> torch.Tensor:
        """The residual core over whole sequences: (M, S, H) -> top outputs (M, S, H)."""
        for lstm in self.core:
            hs, _ = lstm(inputs)
            inputs = hs + inputs  # residual
        return inputs

    def _probe(self, box: BlackBox, record: bool, stepwise: bool):
        self._check_box(box)
        c = self.config
        M, P, T, I = box.num_models, c.num_probes, c.length, self.context.input_size
        bos, eos = self.bos.expand(M, -1), self.eos.expand(M, -1)  # (M, H)
        state = box.initial_state(P)
        if not (self.strategy.adaptive or stepwise):
            # probes known up front: step the networks, then the core over the whole sequence
            probes = self.strategy.all_probes(bos.new_zeros(M, c.core_hidden))  # (M, T, P, I)
            self._check_probes(probes, (M, T, P, I))
            outs = []
            for x in probes.unbind(dim=1):  # (M, P, I)
                y, state = box.step(x, state)
                outs.append(y)
            outputs = torch.stack(outs, dim=1)  # (M, T, P, O)
            sequence = torch.cat([bos[:, None], self._core_input(outputs), eos[:, None]], dim=1)
            final = self._core_sequence(sequence)[:, -1]  # (M, T + 2, H) -> after EOS (M, H)
        else:
            zeros = bos.new_zeros(M, c.core_hidden)
            core_state = [(zeros, zeros)] * c.core_layers  # (h, c) per layer, each (M, H)
            summary, core_state = self._core_step(bos, core_state)  # (M, H)
            last, sent, outs = None, [], []
            for t in range(T):
                x = self.strategy(t, summary, last)  # (M, P, I)
                self._check_probes(x, (M, P, I))
                y, state = box.step(x, state)  # (M, P, O)
                summary, core_state = self._core_step(self._core_input(y), core_state)
                last = y
                if record:
                    sent.append(x)
                    outs.append(y)
            final, _ = self._core_step(eos, core_state)
            probes = torch.stack(sent, dim=1) if record else None
            outputs = torch.stack(outs, dim=1) if record else None
        z = F.normalize(self.to_z(final), dim=-1)  # (M, Z)
        return z, probes, outputs


class NoninteractiveProbingEncoder(ProbingEncoder):
    """Probing with learned static sequences (paper: non-interactive probing)."""

    default_strategy = "static"
    role = "noninteractive_probing"  # the paper's encoder it reproduces


class InteractiveProbingEncoder(ProbingEncoder):
    """Probing whose inputs depend on the answers so far (paper: interactive probing)."""

    default_strategy = "interactive"
    role = "interactive_probing"  # the paper's encoder it reproduces
