"""Task `classifier`: an encoder from model/encoder, then a linear head over the classes."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.config.schema import ModelConfig
from jaxtrain.core.step import weighted_mean
from jaxtrain.errors import ConfigError
from jaxtrain.models.registry import Shapes, build_component
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task


@dataclasses.dataclass
class ClassifierConfig:
  name: str = "classifier"
  # Labels must lie in [0, num_classes); the task only sees one batch, so this is not inferred.
  num_classes: int = 10
  label_key: str = "label"
  label_smoothing: float = 0.0
  # Dropout on the embedding, before the class head (training only).
  dropout: float = 0.0
  # Also report top-k accuracy for this k (1 = accuracy only).
  top_k: int = 3
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)


class Classifier(nn.Module):
  """encoder(x) -> embedding [B, latent_dim] -> dropout -> Dense(num_classes)."""

  encoder: nn.Module
  num_classes: int
  dropout: float

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, train: bool = False) -> tuple[jax.Array, jax.Array]:
    # Only point data carry a mask; encoders of other layouts need not accept one.
    embedding = self.encoder(x, train) if mask is None else self.encoder(x, train, mask=mask)
    hidden = nn.Dropout(self.dropout, deterministic=not train)(embedding)
    return nn.Dense(self.num_classes, name="head")(hidden), embedding


def _check(config: ClassifierConfig, example_batch) -> None:
  if config.num_classes < 2:
    raise ConfigError(f"task.num_classes={config.num_classes}: must be at least 2")
  if not 1 <= config.top_k <= config.num_classes:
    raise ConfigError(f"task.top_k={config.top_k}: must be between 1 and task.num_classes={config.num_classes}")
  if not 0.0 <= config.dropout < 1.0:
    raise ConfigError(f"task.dropout={config.dropout}: must be in [0, 1)")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"task.label_smoothing={config.label_smoothing}: must be in [0, 1)")
  if config.label_key not in example_batch:
    raise ConfigError(f"task.label_key={config.label_key!r}: the data has no such key "
                      f"(keys: {', '.join(sorted(example_batch))})")
  labels = np.asarray(example_batch[config.label_key])
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f"task.label_key={config.label_key!r}: expected integer class ids of shape [batch], "
                      f"got {labels.dtype} {labels.shape}")
  if labels.min() < 0 or labels.max() >= config.num_classes:
    raise ConfigError(f"task.num_classes={config.num_classes}: the data has label {int(labels.max())}; "
                      f"labels must lie in [0, {config.num_classes})")


@register_task("classifier", store_config=False)  # options live in configs/task/classifier.yaml
class ClassifierTask(Task):
  """Softmax classification of batch["x"] into `num_classes` classes from batch[label_key]."""

  config_class = ClassifierConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    _check(config, example_batch)
    self.input_shape = tuple(example_batch["x"].shape[1:])
    self.has_mask = "mask" in example_batch
    shapes = Shapes(input_shape=self.input_shape, latent_dim=config.model.latent_dim,
                    output_shape=(config.num_classes,))
    encoder = build_component("encoder", config.model.encoder, shapes)
    self.model = Classifier(encoder, config.num_classes, config.dropout)

  @classmethod
  def expected_inputs(cls, config):
    # One integer class id per example; inputs of any layout the encoder takes.
    return {"x": (None, "fiu"), config.label_key: (0, "iu")}

  def init(self, rng):
    x = jnp.zeros((1,) + self.input_shape, jnp.float32)
    variables = self.model.init(rng, x, jnp.ones(x.shape[:2], jnp.float32) if self.has_mask else None)
    params = variables.pop("params")
    return params, dict(variables)  # e.g. BatchNorm statistics of a conv encoder

  def _apply(self, params, model_state, batch, rng, train):
    """(logits, embedding, new_model_state); model state only changes in training."""
    variables = {"params": params, **model_state}
    inputs = (batch["x"], batch["mask"] if self.has_mask else None)
    rngs = {"dropout": rng} if train else None
    if train and model_state:
      (logits, embedding), updates = self.model.apply(variables, *inputs, True, rngs=rngs,
                                                      mutable=list(model_state))
      return logits, embedding, {**model_state, **updates}
    logits, embedding = self.model.apply(variables, *inputs, train, rngs=rngs)
    return logits, embedding, model_state

  def loss(self, params, model_state, batch, rng, train):
    cfg = self.config
    logits, _, model_state = self._apply(params, model_state, batch, rng, train)
    labels = batch[cfg.label_key]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, cfg.num_classes), cfg.label_smoothing)
    loss = weighted_mean(optax.softmax_cross_entropy(logits, targets), batch)
    metrics = {"accuracy": weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), batch)}
    if cfg.top_k > 1:
      _, top = jax.lax.top_k(logits, cfg.top_k)
      hit = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
      metrics[f"top{cfg.top_k}_accuracy"] = weighted_mean(hit, batch)
    return loss, (metrics, model_state)

  def embed(self, params, model_state, batch):
    return self._apply(params, model_state, batch, None, False)[1]
