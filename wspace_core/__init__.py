"""wspace: learning representations of recurrent-network weights.

The core (this package) holds the contracts and the plugin machinery only: the hook
specifications, the plugin manager and registries, and the contracts of architectures (with their
symmetry), task families (with the published split rule), encoders, probing strategies,
objectives and heads. Every concrete one is a plugin (see ``plugins/``); the application that runs
them (zoos, training, evaluation, reports, tracking, the CLI) is the ``wspace`` package, which the
core never imports.
"""

__version__ = "0.1.0"
