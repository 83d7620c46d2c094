"""What the paper reports, as data: the Table 2 figures the comparison report prints beside its
own, and the claims its "ordering vs the paper" tests.

Herrmann, Faccio, Schmidhuber, "Learning Useful Representations of Recurrent Neural Network
Weight Matrices", ICML 2024 (arXiv 2403.11998). The paper's encoders and zoos are named here as
the roles plugins declare: an encoder's ``role`` says which of the paper's encoders it reproduces,
a task family's ``paper_zoo`` which of its zoos (``wspace.reporting.roles`` looks them up).
"""

from __future__ import annotations

#: The paper's Table 2 (emulation loss of the emulator conditioned on z, lower is better):
#: (paper zoo, encoder role, split) -> the figure as the paper prints it. The published code that
#: produced it logs its training criterion, total variation averaged over all positions
#: (``published_total_variation`` here), as its validation / OOD loss, so the report prints these
#: figures beside that metric. Only figures with a source are listed; every other cell prints "–".
#:
#: Sources: 0.015 — interactive probing, formal languages, quoted as "the paper's 0.015" in
#: wspace issue #10 ("The published experiment, exactly") against wspace's validation figure.
#: Not yet sourced (neither the published code nor this repository holds them): every other
#: encoder, the OOD column, and the tiled-MNIST rows; add them here from the paper's Table 2.
TABLE_2: dict[tuple[str, str, str], float] = {
    ("formal_languages", "interactive_probing", "validation"): 0.015,
}

#: the metric Table 2's figures are comparable with (see ``TABLE_2``)
TABLE_2_METRIC = "published_total_variation"

#: the paper's two zoos (``TaskFamily.paper_zoo``)
FORMAL_LANGUAGES = "formal_languages"
TILED_MNIST = "tiled_mnist"

#: the paper's encoders its claims name (``Encoder.role``)
INTERACTIVE = "interactive_probing"
NONINTERACTIVE = "noninteractive_probing"
DWSNET = "dwsnet"
#: the paper's probing encoders (functionalist; they expose ``trace``, the probes they sent)
PROBING = (INTERACTIVE, NONINTERACTIVE)

#: the claims ``wspace.reporting.claims.ordering_vs_paper`` tests, in the paper's words (where)
CLAIMS = {
    "emulation_order_formal_languages": (
        "On formal languages, emulation loss: interactive probing < non-interactive probing < every "
        "mechanistic encoder (Table 2)."),
    "probing_similar_and_ahead_mnist": (
        "On sequential MNIST, the two probing encoders have similar emulation losses, both lower than "
        "every mechanistic encoder's (Table 2)."),
    "ood_task_prediction_interactive_best": (
        "On formal languages, the pretrained interactive probing encoder has the lowest OOD "
        "task-prediction loss of all encoders, pretrained or supervised (Fig. 8)."),
    "dwsnet_most_consistent": (
        "On the properties other than the task, DWSNet is the most consistent encoder (Fig. 8/18/19)."),
}
