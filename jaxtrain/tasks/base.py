"""What a task provides: models, loss and metrics; optionally its own steps."""

from __future__ import annotations

import abc
from typing import Any, Mapping

import jax
import numpy as np

from jaxtrain.core.step import EvalStep, TrainStep, make_eval_step, make_train_step


class Task(abc.ABC):
  """A model family with its loss. Subclasses set `config_class` and register
  themselves with `@register_task(name)`.

  The engine builds a task as `TaskClass(config, example_batch)`, where
  `config` is an instance of `config_class` and `example_batch` is one host
  batch (numpy arrays) from the training pipeline, so that input sizes come
  from the data rather than from the config.
  """

  config_class: type

  def __init__(self, config: Any, example_batch: Mapping[str, np.ndarray]):
    self.config = config
    self.example_batch = example_batch

  @abc.abstractmethod
  def init(self, rng: jax.Array) -> tuple[Any, Any]:
    """Returns `(params, model_state)` for a fresh model."""

  @abc.abstractmethod
  def loss(self, params: Any, model_state: Any, batch: Mapping[str, jax.Array], rng: jax.Array,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """Returns `(loss, (metrics, new_model_state))`; metrics are weighted batch means."""

  def train_step(self) -> TrainStep:
    """The pure train step; override for several optimizers or custom updates."""
    return make_train_step(self.loss)

  def eval_step(self) -> EvalStep:
    """The pure eval step returning weighted metric sums."""
    return make_eval_step(self.loss)
