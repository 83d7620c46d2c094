"""wspace: learning representations of recurrent-network weights.

The core (this package) defines contracts and machinery only; every concrete architecture,
task family, encoder, probing strategy, objective and head is a plugin (see ``plugins/``).
"""

__version__ = "0.1.0"
