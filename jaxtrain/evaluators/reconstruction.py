"""Evaluator `reconstruction`: mean squared reconstruction error, overall and per source dataset."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.core.step import example_weights
from jaxtrain.evaluators.base import EvalContext, Evaluator, EvaluatorConfig, register_evaluator

DATASET_KEY = "dataset"


@dataclasses.dataclass
class ReconstructionConfig(EvaluatorConfig):
  name: str = "reconstruction"


def _dataset_ids(context: EvalContext) -> list[int]:
  """The source datasets present in the split (batch["dataset"]), padding rows excluded."""
  if DATASET_KEY not in context.example:
    return []
  ids = set()
  for batch in context.host_batches:
    ids.update(np.asarray(batch[DATASET_KEY])[np.asarray(example_weights(batch)) > 0].tolist())
  return sorted(int(i) for i in ids)


@register_evaluator("reconstruction", ReconstructionConfig)
class ReconstructionError(Evaluator):
  """`recon_mse` over the split's real examples via `task.reconstruct`, weighted like the loss,
  and `recon_mse/<dataset id>` for each source when batches carry a "dataset" key."""

  def metric_names(self, context: EvalContext) -> list[str]:
    context.require("reconstruct", "reconstruction")
    self.dataset_ids = _dataset_ids(context)
    return ["recon_mse"] + [f"recon_mse/{i}" for i in self.dataset_ids]

  def evaluate(self, state: Any, context: EvalContext) -> dict[str, float]:
    task = context.task

    def per_example_error(state, batch):
      reconstruction = task.reconstruct(state.params, state.model_state, batch, state.step_rng())
      error = jnp.square(reconstruction.astype(jnp.float32) - batch["x"].astype(jnp.float32))
      dataset = batch.get(DATASET_KEY, jnp.zeros(error.shape[:1], jnp.int32))
      return error.reshape(error.shape[0], -1).mean(axis=1), example_weights(batch), dataset

    step = context.compiled("reconstruction_error", per_example_error)
    parts = jax.device_get([step(state, batch) for batch in context.batches()])
    errors, weights, datasets = (np.concatenate(column).astype(np.float64) for column in zip(*parts))
    results = {"recon_mse": float(np.sum(errors * weights) / max(np.sum(weights), 1e-12))}
    for dataset_id in self.dataset_ids:
      w = weights * (datasets == dataset_id)
      results[f"recon_mse/{dataset_id}"] = float(np.sum(errors * w) / max(np.sum(w), 1e-12))
    return results
