"""What a run records of its figures: the JSON summary of a pretraining, and nested figures as
MLflow metric keys."""

from __future__ import annotations

from wspace.training.pretrain import PretrainResult


def result_summary(result: PretrainResult) -> dict:
    """The JSON-ready summary of a pretraining (the encoder's resolved settings, best step,
    metrics, steps done, seconds; the trained objective's metric, which metric the best state was
    chosen on, and what each metric computes)."""
    return {"encoder_settings": result.encoder.settings(), "best_step": result.best_step,
            "best_validation": result.best_validation, "metrics": result.metrics, "steps_done": result.steps_done,
            "stopped_early": result.stopped_early, "seconds": result.seconds,
            "objective_metric": result.objective_metric, "selection_metric": result.selection_metric,
            "metric_info": result.metric_info}


def metric_keys(prefix: str, nested: dict) -> dict[str, float]:
    """{"a": {"b": 1.0}} -> {"prefix/a/b": 1.0}: nested figures (split -> metric, property -> split
    -> metric, ...) as flat MLflow metric keys."""
    out = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(metric_keys(f"{prefix}/{key}", value))
        else:
            out[f"{prefix}/{key}"] = value
    return out
