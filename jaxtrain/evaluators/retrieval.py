"""Evaluator `recall_at_k`: nearest-neighbour retrieval in the task's embedding space."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from jaxtrain.core.step import example_weights
from jaxtrain.errors import ConfigError
from jaxtrain.evaluators.base import EvalContext, Evaluator, EvaluatorConfig, register_evaluator

DISTANCES = ("cosine", "euclidean")


@dataclasses.dataclass
class RecallConfig(EvaluatorConfig):
  name: str = "recall_at_k"
  k: list[int] = dataclasses.field(default_factory=lambda: [1, 5])
  distance: str = "cosine"  # cosine | euclidean
  label_key: str = "label"


def recall_at_k(embeddings: np.ndarray, labels: np.ndarray, ks: Sequence[int], distance: str = "cosine",
                ) -> dict[int, float]:
  """For each k: the fraction of examples whose k nearest other examples include one of the same label.

  The query itself is never its own neighbour, even when other examples share its exact embedding.
  """
  from sklearn.neighbors import NearestNeighbors  # heavy import, only when used

  largest = max(ks)
  if largest >= len(embeddings):
    raise ValueError(f"k={largest} needs more than {len(embeddings)} examples")
  index = NearestNeighbors(n_neighbors=largest + 1, metric=distance).fit(embeddings)
  _, neighbours = index.kneighbors(embeddings)
  # Move the query to the end of its row (a stable sort keeps the rest in
  # distance order); rows where ties pushed it out simply lose their last entry.
  is_self = neighbours == np.arange(len(neighbours))[:, None]
  neighbours = np.take_along_axis(neighbours, np.argsort(is_self, axis=1, kind="stable"), axis=1)[:, :largest]
  hits = labels[neighbours] == labels[:, None]
  return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


@register_evaluator("recall_at_k", RecallConfig)
class RecallAtK(Evaluator):
  """recall@K over the split's real examples (weight > 0), from `task.embed` compiled once."""

  def metric_names(self, context: EvalContext) -> list[str]:
    cfg = self.config
    context.require("embed", "recall_at_k")
    if cfg.distance not in DISTANCES:
      raise ConfigError(f"eval.evaluators: recall_at_k distance={cfg.distance!r}; choose one of: "
                        f"{', '.join(DISTANCES)}")
    if cfg.label_key not in context.example:
      raise ConfigError(f"eval.evaluators: recall_at_k label_key={cfg.label_key!r}: the data has no such key "
                        f"(keys: {', '.join(sorted(context.example))})")
    num_real = sum(int(np.sum(np.asarray(example_weights(b)) > 0)) for b in context.host_batches)
    if not cfg.k or min(cfg.k) < 1 or max(cfg.k) >= num_real:
      raise ConfigError(f"eval.evaluators: recall_at_k k={list(cfg.k)}: each k must be in [1, {num_real - 1}] "
                        f"(the split has {num_real} examples)")
    return [f"recall@{k}" for k in sorted(set(cfg.k))]

  def evaluate(self, state: Any, context: EvalContext) -> dict[str, float]:
    label_key = self.config.label_key
    task = context.task

    def embed_with_labels(state, batch):
      return task.embed(state.params, state.model_state, batch), batch[label_key], example_weights(batch)

    step = context.compiled(f"recall_embed_{label_key}", embed_with_labels)
    parts = jax.device_get([step(state, batch) for batch in context.batches()])
    embeddings, labels, weights = (np.concatenate(column) for column in zip(*parts))
    real = weights > 0
    embeddings = embeddings.reshape(len(embeddings), -1)[real].astype(np.float64)
    recalls = recall_at_k(embeddings, labels[real], sorted(set(self.config.k)), self.config.distance)
    return {f"recall@{k}": value for k, value in recalls.items()}
