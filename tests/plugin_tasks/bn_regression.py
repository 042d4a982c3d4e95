"""A user task with its own extra state: an MLP with BatchNorm whose running
statistics (`batch_stats`) are the TrainState's `model_state`, updated by the
loss when `train=True`. Selectable with `task=bn_regression` once this module is
imported (directly, or through JAXTRAIN_PLUGINS)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import jaxtrain
from jaxtrain.core.step import weighted_mean


@dataclasses.dataclass
class BNRegressionConfig:
  name: str = "bn_regression"
  hidden: int = 32


class _BNRegressor(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(self.hidden)(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return nn.Dense(1)(nn.relu(h))[:, 0]


@jaxtrain.register_task("bn_regression")
class BNRegression(jaxtrain.Task):
  """Predicts a fixed linear function of batch["x"]; BatchNorm statistics are model_state."""

  config_class = BNRegressionConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    self.input_dim = int(example_batch["x"].shape[-1])
    self.target_weights = jnp.asarray(np.linspace(-1.0, 1.0, self.input_dim, dtype=np.float32))
    self.model = _BNRegressor(hidden=config.hidden)

  def init(self, rng):
    variables = self.model.init(rng, jnp.zeros((2, self.input_dim), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def loss(self, params, model_state, batch, rng, train):
    target = batch["x"] @ self.target_weights
    variables = {"params": params, "batch_stats": model_state}
    if train:
      prediction, updates = self.model.apply(variables, batch["x"], train=True, mutable=["batch_stats"])
      model_state = updates["batch_stats"]
    else:
      prediction = self.model.apply(variables, batch["x"], train=False)
    mse = weighted_mean(jnp.square(prediction - target), batch)
    return mse, ({"mse": mse}, model_state)
