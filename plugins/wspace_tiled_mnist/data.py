"""Finding and loading the MNIST training set, once per process."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import torch

from wspace_core.registry import WspaceError

#: environment variable naming the MNIST root (the folder that holds ``MNIST/raw/``)
ROOT_ENV = "WSPACE_MNIST_ROOT"
#: default root, tried relative to the current directory, then relative to the repository
DEFAULT_RELATIVE_ROOT = Path("..") / "shared" / "data" / "mnist"
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: the files torchvision's ``MNIST(train=True)`` reads under ``<root>/MNIST/raw/``
_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


@attrs.frozen(eq=False)
class MnistTrain:
    """The 60 000 MNIST training digits: images (N, 28, 28) uint8, labels (N,) int64."""

    root: Path
    images: torch.Tensor
    labels: torch.Tensor


_CACHE: dict[Path, MnistTrain] = {}


def candidate_roots(data_root: str | os.PathLike | None) -> list[Path]:
    """Where to look, in order: the given root alone; else $WSPACE_MNIST_ROOT alone if set;
    else ../shared/data/mnist relative to the current directory, then to the repository."""
    if data_root is not None:
        return [Path(data_root).expanduser()]
    env = os.environ.get(ROOT_ENV)
    if env:
        return [Path(env).expanduser()]
    return [Path.cwd() / DEFAULT_RELATIVE_ROOT, _REPO_ROOT / DEFAULT_RELATIVE_ROOT]


def _has_train_files(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() for name in _TRAIN_FILES)


def resolve_root(data_root: str | os.PathLike | None) -> Path:
    """The first candidate root holding the MNIST training files, or a WspaceError saying
    where it looked and how to fix it."""
    candidates = candidate_roots(data_root)
    for root in candidates:
        if _has_train_files(root):
            return root.resolve()
    looked = ", ".join(str(c / "MNIST" / "raw") for c in candidates)
    raise WspaceError(
        f"MNIST training data not found (looked for {', '.join(_TRAIN_FILES)} in: {looked}). "
        f"Point the task setting data_root (or the environment variable {ROOT_ENV}) at a folder "
        f"that holds MNIST/raw/, or download it once with "
        f"`python -c \"import torchvision; torchvision.datasets.MNIST('<root>', train=True, download=True)\"`."
    )


def load_train(data_root: str | os.PathLike | None = None) -> MnistTrain:
    """The MNIST training set, read once per process and root (torchvision reads the raw IDX files;
    ~0.1 s)."""
    root = resolve_root(data_root)
    cached = _CACHE.get(root)
    if cached is not None:
        return cached
    import torchvision  # deferred: only needed when data is first touched

    try:
        dataset = torchvision.datasets.MNIST(str(root), train=True, download=False)
    except RuntimeError as exc:  # torchvision also wants the t10k files to be present
        raise WspaceError(
            f"torchvision could not open MNIST under {root}: {exc}. Make sure {root / 'MNIST' / 'raw'} "
            f"holds all four uncompressed IDX files (train-* and t10k-*), or set data_root / {ROOT_ENV}."
        ) from exc
    images = dataset.data.to(torch.uint8).contiguous()  # (60000, 28, 28)
    labels = dataset.targets.to(torch.int64).contiguous()  # (60000,)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise WspaceError(f"MNIST under {root} has unexpected shapes {tuple(images.shape)}, "
                          f"{tuple(labels.shape)}; re-download it.")
    data = MnistTrain(root=root, images=images, labels=labels)
    _CACHE[root] = data
    return data
