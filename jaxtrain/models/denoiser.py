"""DDPM pieces for a latent-conditioned diffusion decoder: noise schedules, a
sinusoidal timestep embedding, an MLP noise predictor and DDIM sampling."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.models.mlp import activation_by_name

NOISE_SCHEDULES = ("linear", "cosine")


def alpha_bars(schedule: str, num_timesteps: int) -> np.ndarray:
  """Cumulative products of (1 - beta_t) for t = 0..T-1, float32.

  linear: betas from 1e-4 to 0.02 (DDPM), rescaled so any T spans the same
  noise range as T = 1000; cosine: Nichol & Dhariwal (2021), betas capped at 0.999.
  """
  steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  if schedule == "linear":
    scale = 1000.0 / num_timesteps
    betas = np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), num_timesteps)
  elif schedule == "cosine":
    f = np.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
  else:
    raise ValueError(f"{schedule!r}: choose one of {', '.join(NOISE_SCHEDULES)}")
  return np.cumprod(1.0 - betas).astype(np.float32)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal embedding [B, dim] of integer timesteps [B] (Transformer-style frequencies)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


@dataclasses.dataclass
class DenoiserConfig:
  """MLP noise predictor conditioned on x_t, the timestep and the latent."""

  widths: list[int] = dataclasses.field(default_factory=lambda: [512, 512, 512])
  time_embed_dim: int = 64
  activation: str = "silu"


class Denoiser(nn.Module):
  """Predicts the noise in x_t from (x_t, t, z); residual dense blocks with LayerNorm.

  The timestep and latent enter every block as an additive conditioning vector.
  """

  widths: Sequence[int]
  time_embed_dim: int = 64
  activation: str = "silu"

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, z: jax.Array) -> jax.Array:
    act = activation_by_name(self.activation)
    flat = x_t.reshape(x_t.shape[0], -1)
    cond = jnp.concatenate([timestep_embedding(t, self.time_embed_dim), z], axis=-1)
    cond = act(nn.Dense(self.widths[0], name="cond_in")(cond))
    h = nn.Dense(self.widths[0], name="x_in")(flat)
    for i, width in enumerate(self.widths):
      skip = h if h.shape[-1] == width else nn.Dense(width, name=f"skip_{i}")(h)
      h = nn.LayerNorm(name=f"norm_{i}")(h) + nn.Dense(h.shape[-1], name=f"cond_{i}")(cond)
      h = skip + nn.Dense(width, name=f"dense_{i}")(act(h))
    return nn.Dense(flat.shape[-1], name="out")(act(h)).reshape(x_t.shape)


def ddim_sample(predict_noise: Callable[[jax.Array, jax.Array], jax.Array], noise: jax.Array,
                alpha_bar: jax.Array, sample_steps: int, clip: float | None = 1.0) -> jax.Array:
  """Deterministic DDIM (eta = 0) from x_T = `noise` down to x_0.

  Visits `sample_steps` timesteps evenly strided over [T-1, 0] in one
  `lax.scan`, so it compiles once whatever the number of steps.
  `predict_noise(x_t, t)` takes a batch and integer timesteps [B]; each x_0
  prediction is clipped to [-clip, clip] (the data's normalised range).
  """
  num_timesteps = alpha_bar.shape[0]
  # Always starts at T-1 (pure noise); ends at 0 when there are two or more steps.
  timesteps = np.unique(np.linspace(num_timesteps - 1, 0, max(1, sample_steps)).round().astype(np.int32))[::-1]
  alpha_t = alpha_bar[timesteps]
  # The last step lands on x_0 itself: alpha_bar = 1 there.
  alpha_prev = jnp.concatenate([alpha_bar[timesteps[1:]], jnp.ones((1,), alpha_bar.dtype)])

  def step(x_t, inputs):
    t, a_t, a_prev = inputs
    eps = predict_noise(x_t, jnp.full(x_t.shape[:1], t, jnp.int32))
    x0 = (x_t - jnp.sqrt(1.0 - a_t) * eps) / jnp.sqrt(a_t)
    if clip is not None:
      # The noise is re-derived from the clipped x_0 so that the next x_t stays
      # consistent with it: with the raw prediction, an early (noisy) x_0 error
      # keeps growing and more steps give worse reconstructions.
      x0 = jnp.clip(x0, -clip, clip)
      eps = (x_t - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
    return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * eps, None

  x0, _ = jax.lax.scan(step, noise, (jnp.asarray(timesteps), alpha_t, alpha_prev))
  return x0


class DiffusionAutoencoder(nn.Module):
  """Encoder + latent give z; the denoiser predicts noise conditioned on z."""

  encoder: nn.Module
  latent: nn.Module
  denoiser: Denoiser

  def encode(self, x: jax.Array, weight: jax.Array, train: bool = False):
    """`(z, aux_loss [B], latent metrics)`."""
    return self.latent(self.encoder(x, train), weight, train)

  def denoise(self, x_t: jax.Array, t: jax.Array, z: jax.Array, train: bool = False) -> jax.Array:
    """The predicted noise in `x_t` at timesteps `t` [B]."""
    return self.denoiser(x_t, t, z)

  def __call__(self, x: jax.Array, x_t: jax.Array, t: jax.Array, weight: jax.Array, train: bool = False):
    """`(predicted noise in x_t, aux_loss [B], latent metrics)`, conditioned on the code of `x`."""
    z, aux, metrics = self.encode(x, weight, train)
    return self.denoise(x_t, t, z, train), aux, metrics
