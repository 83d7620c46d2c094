"""``python -m wspace_core.cli``: the ``wspace`` command, also what torchrun launches
(``torchrun --nproc-per-node 2 -m wspace_core.cli zoo build ...``)."""

from wspace_core.cli import main

main()
