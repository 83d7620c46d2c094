"""The tiled-MNIST task-family plugin: rotated MNIST digits read as sequences of 4×4 tiles."""

from wspace_core.hookspecs import hookimpl
from wspace_tiled_mnist.family import TiledMnist, TiledMnistConfig


@hookimpl
def register_task_families(register):
    register("tiled_mnist", TiledMnist)


__all__ = ["TiledMnist", "TiledMnistConfig"]
