"""Multi-layer perceptrons: model/encoder=mlp and model/decoder=mlp (any example shape)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax

from jaxtrain.models.registry import Shapes, register_component

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


# ---------------------------------------------------------------------------
# Components: model/encoder=mlp and model/decoder=mlp.


@dataclasses.dataclass
class MLPComponentConfig:
  name: str = "mlp"
  widths: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
  activation: str = "gelu"


class MLPEncoder(nn.Module):
  """Flattens each example and maps it to `out_dim` features."""

  widths: Sequence[int]
  out_dim: int
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    del mask  # padding points are zeros, which a dense layer can learn to ignore
    return MLP(self.widths, self.out_dim, self.activation, name="mlp")(x.reshape(x.shape[0], -1))


class MLPDecoder(nn.Module):
  """Maps a latent vector to one example of `output_shape`."""

  widths: Sequence[int]
  output_shape: tuple[int, ...]
  activation: str = "gelu"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    flat = MLP(self.widths, math.prod(self.output_shape), self.activation, name="mlp")(z)
    return flat.reshape((z.shape[0],) + tuple(self.output_shape))


@register_component("encoder", "mlp", MLPComponentConfig, store_config=False)
def build_mlp_encoder(cfg: MLPComponentConfig, shapes: Shapes) -> nn.Module:
  activation_by_name(cfg.activation)
  return MLPEncoder(tuple(cfg.widths), shapes.latent_dim, cfg.activation)


@register_component("decoder", "mlp", MLPComponentConfig, store_config=False)
def build_mlp_decoder(cfg: MLPComponentConfig, shapes: Shapes) -> nn.Module:
  activation_by_name(cfg.activation)
  return MLPDecoder(tuple(cfg.widths), tuple(shapes.output_shape), cfg.activation)
