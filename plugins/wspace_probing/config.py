"""Configuration of the probing encoders: one frozen config per preset, options override fields."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from wspace_core.encoder import EncoderContext
from wspace_core.registry import WspaceError
from wspace_core.validators import int_at_least


def _to_int(value: Any) -> Any:
    """Accept ints and int-like strings (options may come from a command line)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


_positive = int_at_least(1, "probing encoder option {name} must be a positive integer, got {value!r}")


#: the longest probing sequence accepted: every step runs the target networks once more and the
#: whole sequence is kept for backpropagation, so a typo such as length=100000 would otherwise
#: run for hours and then exhaust memory (the published lengths are 7 to 50)
MAX_LENGTH = 4096


def _length(instance, attribute, value):
    if value is None:
        return
    _positive(instance, attribute, value)
    if value > MAX_LENGTH:
        raise WspaceError(f"probing encoder option length={value} is longer than wspace accepts "
                          f"({MAX_LENGTH} steps; the paper probes 22 steps for formal languages, 50 "
                          f"for tiled MNIST): pass a shorter --encoder-option length=N")


_hidden_layers = int_at_least(0, "probing encoder option {name} must be an integer >= 0, got {value!r}")


def _optional_name(instance, attribute, value):
    if value is not None and (not isinstance(value, str) or not value):
        raise WspaceError(f"probing encoder option {attribute.name} must be the name of a "
                          f"registered probing strategy, got {value!r}")


#: the published probing length, by the task's input kind: 22 for formal languages
#: (``training_configs.py``), the 49 tiles + 1 = 50 for tiled MNIST (``training_script.py`` sets
#: ``probing_sequence_length = sequence_length + 1`` for that dataset)
PAPER_LENGTH = {"onehot": 22, "continuous": 50}

ANSWERS = ("raw", "log_probs")


def _answers(instance, attribute, value):
    if value not in ANSWERS:
        raise WspaceError(f"probing encoder option answers must be one of {', '.join(ANSWERS)}, "
                          f"got {value!r}")


@attrs.frozen
class ProbingConfig:
    """Sizes of a probing encoder (the published ``InteractiveEncoder``'s, see encoder.py).

    core_hidden × core_layers: the residual LSTM core; mlp_hidden × mlp_layers: width of the
    probe encodings and width and number of hidden layers of the probe decoder E_I (inside the
    strategy) and of the z head; num_probes: P parallel probing sequences per network; length:
    T probing steps (None: the preset's default for the task); probing_strategy: a registered
    strategy name (None: the encoder's default); answers: what the core reads of a categorical
    answer, the raw outputs (logits) as published or their log-probabilities (a wspace option:
    a network's function is its distribution, and a constant shift of its logits is not a
    different function).
    """

    core_hidden: int = attrs.field(converter=_to_int, validator=_positive)
    core_layers: int = attrs.field(converter=_to_int, validator=_positive)
    mlp_hidden: int = attrs.field(converter=_to_int, validator=_positive)
    mlp_layers: int = attrs.field(converter=_to_int, validator=_hidden_layers)
    num_probes: int = attrs.field(converter=_to_int, validator=_positive)
    length: int | None = attrs.field(default=None, converter=_to_int, validator=_length)
    probing_strategy: str | None = attrs.field(default=None, validator=_optional_name)
    answers: str = attrs.field(default="raw", validator=_answers)


#: the sizes at each preset (``wspace_core.presets.PRESETS``)
PRESETS: dict[str, ProbingConfig] = {
    # the published interactive_1 / noninteractive_1 configs: core 256 x 2, MLPs 128 x 1, P = 1 (the
    # argparse default of training_script.py, and the base its length ablations are built from;
    # the _2/_4/_8 configs are ablations: --encoder-option num_probes=8)
    "paper": ProbingConfig(core_hidden=256, core_layers=2, mlp_hidden=128, mlp_layers=1, num_probes=1),
    # a laptop CPU in minutes; log-probabilities read (a small-budget choice: with them the main
    # job's emulation no longer depends on the seed, reports/emulation_curves "Seeds")
    "quick": ProbingConfig(core_hidden=64, core_layers=1, mlp_hidden=64, mlp_layers=1, num_probes=4,
                           answers="log_probs"),
    # tests and wiring checks
    "smoke": ProbingConfig(core_hidden=16, core_layers=1, mlp_hidden=16, mlp_layers=1, num_probes=2),
}

#: longest default probing length of the small presets (the task's sequence length if shorter)
_MAX_DEFAULT_LENGTH = {"quick": 16, "smoke": 6}


def default_length(preset: str, context: EncoderContext) -> int:
    if preset == "paper":
        return PAPER_LENGTH[context.input_kind]
    return min(context.sequence_length, _MAX_DEFAULT_LENGTH[preset])


def resolve_config(context: EncoderContext, default_strategy: str) -> ProbingConfig:
    """The preset's config with ``context.options`` applied; length and strategy filled in."""
    if context.preset not in PRESETS:
        raise WspaceError(f"unknown preset {context.preset!r} for a probing encoder; "
                          f"presets: {', '.join(PRESETS)}")
    options: Mapping[str, Any] = context.options
    valid = [f.name for f in attrs.fields(ProbingConfig)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise WspaceError(f"unknown probing encoder option(s) {', '.join(map(repr, unknown))}; "
                          f"valid options: {', '.join(valid)}")
    config = attrs.evolve(PRESETS[context.preset], **options)
    if config.length is None:
        config = attrs.evolve(config, length=default_length(context.preset, context))
    if config.probing_strategy is None:
        config = attrs.evolve(config, probing_strategy=default_strategy)
    return config
