"""Discriminator for adversarial tasks and the non-saturating GAN losses."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtrain.models.mlp import MLP


@dataclasses.dataclass
class DiscriminatorConfig:
  """An MLP on flattened examples with one real-vs-fake logit per example."""

  widths: list[int] = dataclasses.field(default_factory=lambda: [128])
  activation: str = "gelu"


class Discriminator(nn.Module):
  """Flattens each example and maps it to one logit (positive: looks real)."""

  widths: Sequence[int]
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return MLP(self.widths, 1, self.activation, name="mlp")(x.reshape(x.shape[0], -1))[:, 0]


def discriminator_losses(real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example `(loss, accuracy)` of the discriminator: real labelled 1, fake 0.

  The accuracy averages the real and the fake example, so 0.5 is chance.
  """
  loss = (optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
          + optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)))
  accuracy = 0.5 * ((real_logits > 0).astype(jnp.float32) + (fake_logits < 0).astype(jnp.float32))
  return loss, accuracy


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
  """Per-example non-saturating generator loss: -log D(fake)."""
  return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits))
