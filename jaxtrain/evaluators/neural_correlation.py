"""Evaluator `neural_correlation`: per dataset, how well predicted rates follow the neurons.

For every dataset (batch["dataset"] indexes the task's `dataset_names`) and every real
neuron (neuron_mask), the Pearson correlation over the split's stimuli between the
task's predicted rate and a target column: the ground-truth rates of synthetic
recordings (`rates`), or the recorded responses for real data. Reported as
corr/<dataset> (the mean over that dataset's neurons) and corr/mean (over datasets).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxtrain.core.step import example_weights
from jaxtrain.errors import ConfigError
from jaxtrain.evaluators.base import EvalContext, Evaluator, EvaluatorConfig, register_evaluator


@dataclasses.dataclass
class NeuralCorrelationConfig(EvaluatorConfig):
  name: str = "neural_correlation"
  # What predictions are compared with: rates (ground truth) | responses (the recorded counts).
  target_key: str = "rates"
  mask_key: str = "neuron_mask"


def masked_correlations(predicted: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Pearson correlation over the rows of each recorded column (mask > 0); NaN where a column is constant."""
  keep = mask.max(0) > 0
  p, t = predicted[:, keep], target[:, keep]
  p, t = p - p.mean(0), t - t.mean(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return (p * t).sum(0) / np.sqrt((p * p).sum(0) * (t * t).sum(0))


@register_evaluator("neural_correlation", NeuralCorrelationConfig)
class NeuralCorrelation(Evaluator):
  """corr/<dataset> and corr/mean from the task's `predict(params, batch)`, compiled once."""

  def metric_names(self, context: EvalContext) -> list[str]:
    cfg = self.config
    if not hasattr(context.task, "predict") or not context.task.dataset_names:
      raise ConfigError(f"eval.evaluators: neural_correlation needs a task with per-dataset predictions "
                        f"(task=multidataset); task={context.task.config.name} has none")
    for key in (cfg.target_key, cfg.mask_key, "dataset"):
      if key not in context.example:
        raise ConfigError(f"eval.evaluators: neural_correlation needs the data key {key!r} "
                          f"(keys: {', '.join(sorted(context.example))})")
    return [f"corr/{name}" for name in context.task.dataset_names] + ["corr/mean"]

  def evaluate(self, state: Any, context: EvalContext) -> dict[str, float]:
    cfg = self.config
    task = context.task

    def columns(s, batch):
      # Everything the correlations need comes back from the device (replicated), so with
      # several processes each sees the global rows, not only its own host batches.
      return {"predicted": task.predict(s.params, batch), "target": batch[cfg.target_key],
              "mask": batch[cfg.mask_key], "dataset": batch["dataset"], "weight": example_weights(batch)}

    compiled = context.compiled(f"view_neural_columns_{cfg.target_key}_{cfg.mask_key}", columns)
    parts = jax.device_get([compiled(state, batch) for batch in context.batches()])
    merged = {key: np.concatenate([np.asarray(part[key]) for part in parts]) for key in parts[0]}
    real = merged["weight"] > 0  # not the padding rows of the last batch
    results = {}
    for index, name in enumerate(task.dataset_names):
      rows = real & (merged["dataset"] == index)
      correlations = masked_correlations(merged["predicted"][rows], merged["target"][rows], merged["mask"][rows]) \
          if rows.any() else np.array([np.nan])
      results[f"corr/{name}"] = float(np.nanmean(correlations))
    results["corr/mean"] = float(np.nanmean(list(results.values())))
    return results
