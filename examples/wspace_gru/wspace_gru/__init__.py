"""The GRU architecture plugin: ``torch.nn.GRU(batch_first=True)`` + ``torch.nn.Linear``,
evaluated functionally for many networks at once.

An installed (entry-point) plugin: it uses nothing of wspace beyond its public contracts."""

from wspace_core.hookspecs import hookimpl
from wspace_gru.gru import GRU

__all__ = ["GRU", "register_architectures"]


@hookimpl
def register_architectures(register):
    register("gru", GRU)
