"""A user task registered from its own module: linear regression of a fixed
projection of the digits pixels. Selectable with `task=toy_regression` once this
module is imported (directly, or through JAXTRAIN_PLUGINS)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import jaxtrain
from jaxtrain.core.step import weighted_mean


@dataclasses.dataclass
class ToyRegressionConfig:
  name: str = "toy_regression"
  hidden: int = 32


class _Regressor(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(x)))[:, 0]


@jaxtrain.register_task("toy_regression")
class ToyRegression(jaxtrain.Task):
  """Predicts a fixed linear function of batch["x"] with a small MLP."""

  config_class = ToyRegressionConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    self.input_dim = int(example_batch["x"].shape[-1])
    self.target_weights = jnp.asarray(np.linspace(-1.0, 1.0, self.input_dim, dtype=np.float32))
    self.model = _Regressor(hidden=config.hidden)

  def init(self, rng):
    return self.model.init(rng, jnp.zeros((1, self.input_dim), jnp.float32))["params"], {}

  def loss(self, params, model_state, batch, rng, train):
    target = batch["x"] @ self.target_weights
    prediction = self.model.apply({"params": params}, batch["x"])
    mse = weighted_mean(jnp.square(prediction - target), batch)
    return mse, ({"mse": mse}, model_state)
