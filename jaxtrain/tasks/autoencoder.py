"""Task `ae`: an autoencoder assembled from model/encoder, model/latent and model/decoder.

loss = reconstruction + latent_loss_weight * the latent's per-example aux loss
(0 for model/latent=none), both weighted per example. The reconstruction is
the mean squared error for flat or image data and a masked symmetric Chamfer
distance for point sets (batches with a "mask", e.g. data=digits_points).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.config.schema import ModelConfig
from jaxtrain.core.step import example_weights, weighted_mean
from jaxtrain.errors import ConfigError
from jaxtrain.models.composite import apply_with_state, init_variables
from jaxtrain.models.registry import Shapes, build_component
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task

RECONSTRUCTIONS = ("auto", "mse", "chamfer")


@dataclasses.dataclass
class AutoencoderConfig:
  name: str = "ae"
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  # mse | chamfer | auto (chamfer when the batch has a "mask", else mse).
  reconstruction: str = "auto"
  latent_loss_weight: float = 1.0


class Autoencoder(nn.Module):
  """x -> encoder -> latent -> decoder."""

  encoder: nn.Module
  latent: nn.Module
  decoder: nn.Module

  def __call__(self, x, weight, mask, train: bool):
    z, aux_loss, metrics = self.encode(x, weight, mask, train)
    return self.decoder(z, train), aux_loss, metrics

  def encode(self, x, weight, mask, train: bool):
    # Only point data carry a mask; encoders of other layouts need not accept one.
    h = self.encoder(x, train) if mask is None else self.encoder(x, train, mask=mask)
    return self.latent(h, weight, train)


def chamfer_distance(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Symmetric Chamfer distance per example [B] between all points of `pred` [B, P, F]
  and the points of `target` [B, Q, F] with mask [B, Q] = 1 (0 for an empty target):
  mean squared distance from each point to the nearest point of the other set, both ways."""
  sq_dist = jax.lax.stop_gradient(jnp.sum(jnp.square(pred), -1)[:, :, None] - 2.0 * pred @ target.swapaxes(1, 2)
                                  + jnp.sum(jnp.square(target), -1)[:, None, :])  # [B, P, Q]
  valid = mask > 0
  # Pick the nearest points without gradient, then measure to them: the same
  # value and gradient as a min over distances, but one-hot matmuls instead of
  # a min's backward pass (about twice as fast on CPU).
  to_target = jax.nn.one_hot(jnp.argmin(jnp.where(valid[:, None, :], sq_dist, jnp.inf), axis=2), target.shape[1])
  to_pred = jax.nn.one_hot(jnp.argmin(sq_dist, axis=1), pred.shape[1])
  pred_to_target = jnp.mean(jnp.sum(jnp.square(pred - to_target @ target), -1), axis=1)
  target_to_pred = jnp.sum(jnp.square(target - to_pred @ pred), -1)
  target_to_pred = jnp.sum(target_to_pred * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
  return jnp.where(jnp.any(valid, axis=1), pred_to_target + target_to_pred, 0.0)


@register_task("ae", store_config=False)  # options live in configs/task/ae.yaml
class AutoencoderTask(Task):
  """Reconstructs batch["x"] (any layout the chosen components accept) through a latent code."""

  config_class = AutoencoderConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    self.example_shape = tuple(example_batch["x"].shape[1:])
    self.has_mask = "mask" in example_batch
    mode = config.reconstruction
    if mode not in RECONSTRUCTIONS:
      raise ConfigError(f"task.reconstruction={mode!r}: choose one of: {', '.join(RECONSTRUCTIONS)}")
    self.metric = ("chamfer" if self.has_mask else "mse") if mode == "auto" else mode
    if self.metric == "chamfer" and len(self.example_shape) != 2:
      raise ConfigError(f"task.reconstruction=chamfer needs point sets [P, F] per example, got data of shape "
                        f"{list(self.example_shape)}; use a point layout such as data=digits_points")
    shapes = Shapes(self.example_shape, config.model.latent_dim, self.example_shape)
    self.model = Autoencoder(*(build_component(kind, getattr(config.model, kind), shapes)
                               for kind in ("encoder", "latent", "decoder")))

  @classmethod
  def expected_inputs(cls, config):
    # Reconstructing x by squared error or Chamfer distance needs float x; Chamfer needs point sets.
    return {"x": (2 if config.reconstruction == "chamfer" else None, "f")}

  def _inputs(self, batch):
    mask = batch["mask"] if self.has_mask else None
    return batch["x"], example_weights(batch), mask

  def init(self, rng):
    x = jnp.zeros((1,) + self.example_shape, jnp.float32)
    mask = jnp.ones(x.shape[:2], jnp.float32) if self.has_mask else None
    # Collections other than params (e.g. the VQ's code usage) become the model state.
    return init_variables(self.model, rng, x, jnp.ones((1,), jnp.float32), mask, train=False)

  def _apply(self, params, model_state, batch, train, method=None):
    return apply_with_state(self.model, params, model_state, *self._inputs(batch), train=train, method=method)

  def loss(self, params, model_state, batch, rng, train):
    (reconstruction, aux_loss, latent_metrics), model_state = self._apply(params, model_state, batch, train)
    if self.metric == "chamfer":
      mask = batch["mask"] if self.has_mask else jnp.ones(batch["x"].shape[:2], jnp.float32)
      error = chamfer_distance(reconstruction, batch["x"], mask)
    else:
      error = jnp.square(reconstruction - batch["x"]).reshape(reconstruction.shape[0], -1).mean(axis=1)
    loss = weighted_mean(error + self.config.latent_loss_weight * aux_loss, batch)
    return loss, ({self.metric: weighted_mean(error, batch), **latent_metrics}, model_state)

  def embed(self, params, model_state, batch):
    z, _, _ = self._apply(params, model_state, batch, False, method=Autoencoder.encode)[0]
    return z

  def reconstruct(self, params, model_state, batch, rng):
    return self._apply(params, model_state, batch, False)[0][0]
