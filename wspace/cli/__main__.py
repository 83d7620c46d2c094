"""``python -m wspace.cli``: the ``wspace`` command, also what torchrun launches
(``torchrun --nproc-per-node 2 -m wspace.cli zoo build ...``)."""

from wspace.cli import main

main()
