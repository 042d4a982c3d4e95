"""Latent spaces between encoder and decoder: model/latent=none|linear|vq.

Contract of a latent module: `__call__(h, weight, train) -> (z, aux_loss, metrics)`
where `h` is the encoder output [B, latent_dim], `weight` the per-example
weights [B] (padding in eval batches has weight 0), `z` what the decoder reads
[B, latent_dim], `aux_loss` a per-example loss [B] added to the task's objective
(zeros when the latent has none) and `metrics` a dict of scalar batch statistics
(weighted by `weight`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.models.registry import Shapes, register_component


@dataclasses.dataclass
class NoLatentConfig:
  name: str = "none"


class IdentityLatent(nn.Module):
  """The encoder output is the code."""

  @nn.compact
  def __call__(self, h: jax.Array, weight: jax.Array, train: bool = False):
    return h, jnp.zeros(h.shape[:1], h.dtype), {}


@register_component("latent", "none", NoLatentConfig, store_config=False)
def build_no_latent(cfg: NoLatentConfig, shapes: Shapes) -> nn.Module:
  return IdentityLatent()
