"""torch's stacked gated RNNs as wspace sees them: the parameter layout and the hidden-neuron
symmetry of ``torch.nn.{RNN,GRU,LSTM}(input, hidden, layers, batch_first=True)`` followed by
``torch.nn.Linear(hidden, output)``, and torch's default initialisation. Architectures that keep
torch's layout (the bundled LSTM, the GRU example) build theirs from these, so a flat weight
vector of such a torch model (``parameters_to_vector``) loads as is."""

from __future__ import annotations

import torch

from wspace_core.architecture import ParameterLayout, Params, ParamSpec, Sizes
from wspace_core.symmetry import NeuronGroup, PermutedAxis, SymmetrySpec


def stacked_layout(prefix: str, gates: int, sizes: Sizes) -> ParameterLayout:
    """Per layer ``{prefix}.weight_ih_l{k}`` (gates·H, in), ``weight_hh`` (gates·H, H),
    ``bias_ih`` and ``bias_hh`` (gates·H,), then ``linear.weight`` (O, H) and ``linear.bias`` (O,):
    torch's names, order and shapes (``prefix`` is the module's attribute name, e.g. "lstm")."""
    H = sizes.hidden_size
    specs = []
    for layer in range(sizes.num_layers):
        in_size = sizes.input_size if layer == 0 else H
        specs += [
            ParamSpec(f"{prefix}.weight_ih_l{layer}", (gates * H, in_size)),
            ParamSpec(f"{prefix}.weight_hh_l{layer}", (gates * H, H)),
            ParamSpec(f"{prefix}.bias_ih_l{layer}", (gates * H,)),
            ParamSpec(f"{prefix}.bias_hh_l{layer}", (gates * H,)),
        ]
    specs += [ParamSpec("linear.weight", (sizes.output_size, H)), ParamSpec("linear.bias", (sizes.output_size,))]
    return ParameterLayout(specs)


def stacked_symmetry(prefix: str, gates: int, sizes: Sizes) -> SymmetrySpec:
    """One neuron group per layer: the rows of each of the ``gates`` blocks of W_ih, W_hh and both
    biases (neuron j's gate rows move together), the columns of W_hh, and the columns of whatever
    reads the layer (the next layer's W_ih, or the read-out)."""
    groups = []
    for layer in range(sizes.num_layers):
        axes = [
            PermutedAxis(f"{prefix}.weight_ih_l{layer}", 0, gates),
            PermutedAxis(f"{prefix}.weight_hh_l{layer}", 0, gates),
            PermutedAxis(f"{prefix}.bias_ih_l{layer}", 0, gates),
            PermutedAxis(f"{prefix}.bias_hh_l{layer}", 0, gates),
            PermutedAxis(f"{prefix}.weight_hh_l{layer}", 1, 1),
        ]
        reader = f"{prefix}.weight_ih_l{layer + 1}" if layer + 1 < sizes.num_layers else "linear.weight"
        axes.append(PermutedAxis(reader, 1, 1))
        groups.append(NeuronGroup(f"layer{layer}", sizes.hidden_size, axes))
    return SymmetrySpec(groups)


def uniform_init(layout: ParameterLayout, bound: float, num_models: int, generator: torch.Generator | None = None,
                 device="cpu", dtype=torch.float32) -> Params:
    """Every parameter U(-bound, bound), {name: (M, *shape)}, drawn in layout order from
    ``generator``: torch's default for its RNNs and for Linear(H, O) is bound = 1/√H."""
    params = {}
    for p in layout.params:
        u = torch.rand((num_models, *p.shape), generator=generator, dtype=dtype)
        params[p.name] = (u * 2 - 1).mul_(bound).to(device)
    return params
