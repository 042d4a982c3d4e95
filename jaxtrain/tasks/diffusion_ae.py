"""Task `diffusion_ae`: a diffusion autoencoder. The encoder (+ latent) gives a
code z; a DDPM-style denoiser conditioned on z predicts the noise in x_t.

Training is cheap (noise-prediction MSE at one random timestep per example).
Evaluation runs the reverse process: deterministic DDIM over `sample_steps`
strided timesteps from a fixed eval noise, and compares its reconstructions
with the baseline of predicting the training mean image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.config.schema import ModelConfig
from jaxtrain.core.step import WEIGHT_KEY, example_weights, weighted_mean
from jaxtrain.errors import ConfigError
from jaxtrain.models.composite import apply_with_state, init_variables
from jaxtrain.models.denoiser import (NOISE_SCHEDULES, Denoiser, DenoiserConfig, DiffusionAutoencoder, alpha_bars,
                                      ddim_sample)
from jaxtrain.models.registry import Shapes, build_component
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task


@dataclasses.dataclass
class DiffusionAEConfig:
  name: str = "diffusion_ae"
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  noise_schedule: str = "cosine"  # betas: linear | cosine
  num_timesteps: int = 1000
  sample_steps: int = 20  # DDIM steps of the reverse process in eval and the views
  denoiser: DenoiserConfig = dataclasses.field(default_factory=DenoiserConfig)
  eval_seed: int = 0  # the eval noise is the same at every evaluation


@register_task("diffusion_ae", store_config=False)  # options live in configs/task/diffusion_ae.yaml
class DiffusionAutoencoderTask(Task):
  """Encodes batch["x"] to z and learns to denoise batch["x"] given z."""

  config_class = DiffusionAEConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    _check(config, example_batch)
    x = np.asarray(example_batch["x"], np.float32)
    self.example_x = x[:2]
    # Diffusion runs on data scaled to [-1, 1] by the first training batch's value range.
    low, high = float(x.min()), float(x.max())
    self.center, self.half_range = (high + low) / 2, ((high - low) / 2) or 1.0
    self.mean_image = x.mean(axis=0)  # the baseline: the first training batch's mean example
    self.alpha_bar = alpha_bars(config.noise_schedule, config.num_timesteps)
    shapes = Shapes(input_shape=x.shape[1:], latent_dim=config.model.latent_dim, output_shape=x.shape[1:])
    self.model = DiffusionAutoencoder(
        encoder=build_component("encoder", config.model.encoder, shapes),
        latent=build_component("latent", config.model.latent, shapes),
        denoiser=Denoiser(tuple(config.denoiser.widths), config.denoiser.time_embed_dim, config.denoiser.activation))

  def init(self, rng):
    x = self.example_x
    return init_variables(self.model, rng, x, x, jnp.zeros(len(x), jnp.int32), jnp.ones(len(x)), train=False)

  def loss(self, params, model_state, batch, rng, train):
    x0 = (batch["x"] - self.center) / self.half_range
    t_rng, noise_rng = jax.random.split(rng)
    t = jax.random.randint(t_rng, x0.shape[:1], 0, self.config.num_timesteps)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    alpha = jnp.asarray(self.alpha_bar)[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = jnp.sqrt(alpha) * x0 + jnp.sqrt(1.0 - alpha) * noise
    (predicted, aux_loss, latent_metrics), model_state = apply_with_state(
        self.model, params, model_state, batch["x"], x_t, t, example_weights(batch), train=train)
    denoise_mse = weighted_mean(jnp.square(predicted - noise), batch)
    return denoise_mse + weighted_mean(aux_loss, batch), (dict(latent_metrics, denoise_mse=denoise_mse), model_state)

  def eval_step(self):
    def eval_step(state, batch):
      rng = jax.random.PRNGKey(self.config.eval_seed)
      loss, (metrics, _) = self.loss(state.params, state.model_state, batch, rng, False)
      reconstruction = self.reconstruct(state.params, state.model_state, batch, jax.random.fold_in(rng, 1))
      metrics = dict(metrics, loss=loss, recon_mse=weighted_mean(jnp.square(reconstruction - batch["x"]), batch),
                     mean_image_mse=weighted_mean(jnp.square(self.mean_image - batch["x"]), batch))
      total = jnp.sum(example_weights(batch))
      return {**{name: value * total for name, value in metrics.items()}, WEIGHT_KEY: total}

    return eval_step

  def _encode(self, params, model_state, batch):
    return apply_with_state(self.model, params, model_state, batch["x"], example_weights(batch), train=False,
                            method=DiffusionAutoencoder.encode)[0][0]

  def _reverse_process(self, params, model_state, z, noise):
    """DDIM from `noise` to an example, conditioned on the codes `z`; in data units."""

    def predict_noise(x_t, t):
      return apply_with_state(self.model, params, model_state, x_t, t, z, train=False,
                              method=DiffusionAutoencoder.denoise)[0]

    x0 = ddim_sample(predict_noise, noise, jnp.asarray(self.alpha_bar), self.config.sample_steps)
    return x0 * self.half_range + self.center

  def reconstruct(self, params, model_state, batch, rng):
    z = self._encode(params, model_state, batch)
    return self._reverse_process(params, model_state, z, jax.random.normal(rng, batch["x"].shape))

  def embed(self, params, model_state, batch):
    return self._encode(params, model_state, batch)

  def sample(self, params, model_state, rng, num):
    z_rng, noise_rng = jax.random.split(rng)
    z = jax.random.normal(z_rng, (num, self.config.model.latent_dim))
    noise = jax.random.normal(noise_rng, (num,) + self.example_x.shape[1:])
    return self._reverse_process(params, model_state, z, noise)


def _check(cfg: DiffusionAEConfig, example_batch) -> None:
  """One-line ConfigErrors for the task's own choices and for data it cannot model."""
  if "mask" in example_batch:
    raise ConfigError("task=diffusion_ae compares examples element by element; point sets with a mask (e.g. "
                      "data=digits_points) are not supported: use flat or image data")
  if cfg.noise_schedule not in NOISE_SCHEDULES:
    raise ConfigError(f"task.noise_schedule={cfg.noise_schedule!r}: choose one of: {', '.join(NOISE_SCHEDULES)}")
  if cfg.num_timesteps < 2:
    raise ConfigError(f"task.num_timesteps={cfg.num_timesteps}: must be at least 2")
  if not 1 <= cfg.sample_steps <= cfg.num_timesteps:
    raise ConfigError(f"task.sample_steps={cfg.sample_steps}: must be between 1 and task.num_timesteps")
  if not cfg.denoiser.widths:
    raise ConfigError("task.denoiser.widths: must list at least one layer width")
