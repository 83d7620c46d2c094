"""The zoo: the on-disk population of trained networks (weights, rollouts, metadata, splits).

A zoo is a directory anyone can copy, archive and open without wspace: ``manifest.json`` (plain
JSON) plus ``.npy`` arrays (``np.load(path, mmap_mode="r")``). See ``store`` for the layout.

    from wspace.zoo import Zoo
    zoo = Zoo.open("zoos/formal")           # checks checksums; memory-maps the arrays
    zoo.weights[zoo.rows(split="train", snapshot=-1)]
"""

from wspace.zoo.files import ZooFileError
from wspace.zoo.info import format_info, zoo_info
from wspace.zoo.lock import ZooLockedError
from wspace.zoo.manifest import FORMAT_VERSION
from wspace.zoo.merge import merge_zoos
from wspace.zoo.store import Zoo, ZooWriter


def import_paper(*args, **kwargs):
    """Import a published zoo of the paper; see ``wspace.zoo.paper_import.import_paper``."""
    from wspace.zoo.paper_import import import_paper as _import_paper
    return _import_paper(*args, **kwargs)


__all__ = ["FORMAT_VERSION", "Zoo", "ZooFileError", "ZooLockedError", "ZooWriter", "format_info",
           "import_paper", "merge_zoos", "zoo_info"]
