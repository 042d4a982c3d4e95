"""Evaluator `metrics`: the task's loss and metrics, exact means over the whole split."""

from __future__ import annotations

from typing import Any

import jax

from jaxtrain.core.step import WEIGHT_KEY
from jaxtrain.evaluators.base import EvalContext, Evaluator, EvaluatorConfig, register_evaluator


@register_evaluator("metrics", EvaluatorConfig)
class TaskMetrics(Evaluator):
  """Runs the task's eval step (weighted sums per batch) and divides by the summed weight.

  The padded rows of a ragged last batch have weight 0, so the means are
  exact whatever the batch size; the step is compiled once and the batches
  stay on the devices between evaluations (see EvalContext).
  """

  def metric_names(self, context: EvalContext) -> list[str]:
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((x.shape[0] * jax.process_count(),) + x.shape[1:], x.dtype),
        context.example)
    # Traced through the compiled eval step, which keeps the trace for its compile: the
    # step is traced once per run, not once here and again before the first evaluation.
    sums = context.eval_step.output_shapes(context.abstract_state, abstract_batch)
    return sorted(name for name in sums if name != WEIGHT_KEY)

  def evaluate(self, state: Any, context: EvalContext) -> dict[str, float]:
    # Dispatch every batch before reading any result: one host sync per evaluation.
    sums = [context.eval_step(state, batch) for batch in context.batches()]
    totals: dict[str, float] = {}
    for batch_sums in jax.device_get(sums):
      for name, value in batch_sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    weight = totals.pop(WEIGHT_KEY)
    return {name: value / weight for name, value in totals.items()}
