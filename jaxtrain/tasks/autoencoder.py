"""Task `ae`: MLP autoencoder with an MSE reconstruction loss."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxtrain.core.step import weighted_mean
from jaxtrain.models.mlp import MLPAutoencoder
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task


@dataclasses.dataclass
class AutoencoderConfig:
  name: str = "ae"
  encoder_widths: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
  latent_dim: int = 16
  decoder_widths: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
  activation: str = "gelu"


@register_task("ae", store_config=False)  # options live in configs/task/ae.yaml
class AutoencoderTask(Task):
  """Reconstructs batch["x"] (shape [B, D]) through a low-dimensional latent."""

  config_class = AutoencoderConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    self.input_dim = int(example_batch["x"].shape[-1])
    self.model = MLPAutoencoder(
        input_dim=self.input_dim,
        encoder_widths=tuple(config.encoder_widths),
        latent_dim=config.latent_dim,
        decoder_widths=tuple(config.decoder_widths),
        activation=config.activation,
    )

  def init(self, rng):
    variables = self.model.init(rng, jnp.zeros((1, self.input_dim), jnp.float32))
    return variables["params"], {}

  def loss(self, params, model_state, batch, rng, train):
    reconstruction, _ = self.model.apply({"params": params}, batch["x"])
    mse = weighted_mean(jnp.square(reconstruction - batch["x"]), batch)
    return mse, ({"mse": mse}, model_state)
