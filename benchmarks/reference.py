"""The published implementation, imported at run time from a checkout the benchmark is given.

The project never copies the published code: ``--reference DIR`` names a checkout of
github.com/vincentherrmann/rnn-weights-representation-learning (the directory holding
``training_script.py``, or a directory containing ``rnn_weights_representation_learning/``), and
its modules are imported from there, in the benchmark's own process tree.

Two of its imports are not dependencies of wspace. Where they are not installed, a stand-in
module is registered for them, and the benchmark reports that it did so:

- ``wandb`` (imported by ``training_script.py``): only its logging uses it, which no timed
  step calls; the stand-in raises if anything touches it.
- ``npy_append_array`` (imported by ``dataset_creation_formal_language.py``): its zoo writer.
  With the stand-in, the per-model loop saves each model's snapshots with ``numpy.save``
  instead (the same arrays, written once per model rather than appended per snapshot).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

#: the published code's entry points; a directory holding these is a checkout
MARKER = "training_script.py"
CHECKOUT_NAME = "rnn_weights_representation_learning"
#: modules the published code imports that wspace does not need
OPTIONAL_IMPORTS = ("wandb", "npy_append_array")


class ReferenceError(RuntimeError):
    """The published implementation could not be found or imported."""


class _Absent(types.ModuleType):
    """Stand-in for a module the published code imports but the benchmark never uses."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ReferenceError(f"{self.__name__}.{attr} was used, but {self.__name__} is not installed (the "
                             f"benchmark registered a stand-in because no timed code path should need it)")


def checkout_dir(path: str | Path) -> Path:
    """The directory holding the published modules: ``path`` itself or ``path/rnn_weights_...``."""
    path = Path(path).expanduser()
    for candidate in (path, path / CHECKOUT_NAME):
        if (candidate / MARKER).is_file():
            return candidate.resolve()
    raise ReferenceError(f"no checkout of the published implementation at {path}: expected {MARKER} there or "
                         f"in {path / CHECKOUT_NAME}; pass --reference with the checkout's directory")


def load(path: str | Path) -> tuple[Path, list[str]]:
    """Put the checkout first on ``sys.path`` (its modules import each other by bare name) and
    register stand-ins for the optional imports that are missing. Returns (checkout, stand-ins)."""
    root = checkout_dir(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    stand_ins = []
    for name in OPTIONAL_IMPORTS:
        if name in sys.modules:
            if isinstance(sys.modules[name], _Absent):
                stand_ins.append(name)
            continue
        if importlib.util.find_spec(name) is None:
            module = _Absent(name)
            if name == "npy_append_array":
                module.NpyAppendArray = None  # checked by the loop: None means "save with numpy"
            sys.modules[name] = module
            stand_ins.append(name)
    return root, stand_ins


def module(name: str):
    """Import one of the published modules (after ``load``)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ReferenceError(f"importing the published module {name!r} failed: {err}; install what it "
                             f"needs for the benchmark (pip install ...), wspace does not depend on it") from err
