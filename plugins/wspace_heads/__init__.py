"""Property-prediction heads: a 2-layer MLP on z for each PropertySpec kind."""

from wspace_core.hookspecs import hookimpl
from wspace_heads.heads import AngleHead, CategoricalHead, MultiHotHead, ScalarHead


@hookimpl
def register_heads(register):
    register("multihot", MultiHotHead)
    register("categorical", CategoricalHead)
    register("scalar", ScalarHead)
    register("angle", AngleHead)
