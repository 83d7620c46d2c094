"""wspace, the application layer: everything that runs the method on top of the contracts of
``wspace_core`` and the plugins registered there.

- ``wspace.zoo``: model zoos (build, store, verify, merge, import the published files)
- ``wspace.training``: emulation pretraining (the emulator, the training loop, torchrun data parallelism)
- ``wspace.evaluation``: what a trained encoder is measured by (downstream property heads, the
  permutation table)
- ``wspace.experiment``: ``wspace run`` (one encoder, end to end) and ``wspace compare`` (all encoders, seeds)
- ``wspace.reporting``: report.md, its statistics and figures, the paper's reported figures
- ``wspace.tracking``: MLflow (the only module that imports it)
- ``wspace.config``, ``wspace.validation``: the run configuration and the checks made before work
- ``wspace.cli``: the ``wspace`` command

``wspace_core`` never imports this package.
"""

from wspace_core import __version__

__all__ = ["__version__"]
