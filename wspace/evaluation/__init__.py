"""How a trained encoder is measured: downstream property heads on the frozen z, the hidden-neuron
permutation table."""
