"""Experiments: ``wspace run`` (one encoder, zoo to results) and ``wspace compare`` (every encoder
over seeds, with the no-information baseline)."""
