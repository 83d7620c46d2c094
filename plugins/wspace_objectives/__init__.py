"""Emulation objectives: how far an emulator's outputs are from a network's stored outputs."""

from wspace_core.hookspecs import hookimpl
from wspace_objectives.losses import CrossEntropy, MeanSquaredError, ReverseKL, ReverseKLClassMean, TotalVariation


@hookimpl
def register_objectives(register):
    register("reverse_kl", ReverseKL)
    register("reverse_kl_class_mean", ReverseKLClassMean)
    register("total_variation", TotalVariation)
    register("cross_entropy", CrossEntropy)
    register("mse", MeanSquaredError)
