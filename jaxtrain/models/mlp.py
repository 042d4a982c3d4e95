"""Multi-layer perceptrons and the MLP autoencoder."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": nn.gelu,
    "relu": nn.relu,
    "silu": nn.silu,
    "tanh": nn.tanh,
}


def activation_by_name(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation function, with the valid names in the error."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class MLP(nn.Module):
  """Dense layers of `widths` with an activation between them, then a linear `out_dim`."""

  widths: Sequence[int]
  out_dim: int
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activation_by_name(self.activation)
    for i, width in enumerate(self.widths):
      x = act(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.out_dim, name="out")(x)


class MLPAutoencoder(nn.Module):
  """x -> encoder -> latent -> decoder -> reconstruction of x."""

  input_dim: int
  encoder_widths: Sequence[int]
  latent_dim: int
  decoder_widths: Sequence[int]
  activation: str = "gelu"

  def setup(self):
    self.encoder = MLP(self.encoder_widths, self.latent_dim, self.activation)
    self.decoder = MLP(self.decoder_widths, self.input_dim, self.activation)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    latent = self.encoder(x)
    return self.decoder(latent), latent
