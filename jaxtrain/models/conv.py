"""Convolutional encoder and decoder for images [H, W, C]: model/encoder=conv, model/decoder=conv."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax

from jaxtrain.models.mlp import activation_by_name
from jaxtrain.models.registry import Shapes, register_component


@dataclasses.dataclass
class ConvEncoderConfig:
  name: str = "conv"
  # Output channels of each convolution, and its stride (one per layer).
  features: list[int] = dataclasses.field(default_factory=lambda: [32, 64])
  strides: list[int] = dataclasses.field(default_factory=lambda: [2, 2])
  kernel_size: int = 3
  activation: str = "gelu"


@dataclasses.dataclass
class ConvDecoderConfig:
  name: str = "conv"
  # Channels of the feature map before each transposed convolution, and that
  # convolution's upsampling stride: the first map is output_shape / prod(strides)
  # in each spatial axis, the last convolution produces the output's channels.
  features: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
  strides: list[int] = dataclasses.field(default_factory=lambda: [2, 2])
  kernel_size: int = 3
  activation: str = "gelu"


class ConvEncoder(nn.Module):
  """Strided convolutions, then a linear map of the flattened feature map to `out_dim`."""

  features: Sequence[int]
  strides: Sequence[int]
  kernel_size: int
  out_dim: int
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    act = activation_by_name(self.activation)
    k = (self.kernel_size, self.kernel_size)
    for i, (width, stride) in enumerate(zip(self.features, self.strides)):
      x = act(nn.Conv(width, k, strides=(stride, stride), padding="SAME", name=f"conv_{i}")(x))
    return nn.Dense(self.out_dim, name="out")(x.reshape(x.shape[0], -1))


class ConvDecoder(nn.Module):
  """A linear map to a small feature map, then transposed convolutions up to `output_shape`
  (the last one linear, straight to the output's channels)."""

  features: Sequence[int]
  strides: Sequence[int]
  kernel_size: int
  output_shape: tuple[int, int, int]
  activation: str = "gelu"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    act = activation_by_name(self.activation)
    height, width, channels = self.output_shape
    scale = math.prod(self.strides)
    start = (height // scale, width // scale, self.features[0])
    x = act(nn.Dense(math.prod(start), name="project")(z)).reshape((z.shape[0],) + start)
    k = (self.kernel_size, self.kernel_size)
    out_features = list(self.features[1:]) + [channels]
    for i, (feat, stride) in enumerate(zip(out_features, self.strides)):
      x = nn.ConvTranspose(feat, k, strides=(stride, stride), padding="SAME", name=f"up_{i}")(x)
      x = act(x) if i < len(out_features) - 1 else x
    return x


def _check_layers(features: Sequence[int], strides: Sequence[int]) -> None:
  if not features or len(features) != len(strides):
    raise ValueError(f"features {list(features)} and strides {list(strides)} need one entry per layer")
  if min(strides) < 1 or min(features) < 1:
    raise ValueError("features and strides must be positive")


@register_component("encoder", "conv", ConvEncoderConfig, store_config=False)
def build_conv_encoder(cfg: ConvEncoderConfig, shapes: Shapes) -> nn.Module:
  if len(shapes.input_shape) != 3:
    raise ValueError(f"expects rank-3 images [H, W, C] per example, got shape {list(shapes.input_shape)} "
                     f"(rank {len(shapes.input_shape)}); use an image layout such as data=digits_images")
  _check_layers(cfg.features, cfg.strides)
  activation_by_name(cfg.activation)
  return ConvEncoder(tuple(cfg.features), tuple(cfg.strides), cfg.kernel_size, shapes.latent_dim, cfg.activation)


@register_component("decoder", "conv", ConvDecoderConfig, store_config=False)
def build_conv_decoder(cfg: ConvDecoderConfig, shapes: Shapes) -> nn.Module:
  if len(shapes.output_shape) != 3:
    raise ValueError(f"produces rank-3 images [H, W, C], but the output shape is {list(shapes.output_shape)} "
                     f"(rank {len(shapes.output_shape)}); use an image layout such as data=digits_images")
  _check_layers(cfg.features, cfg.strides)
  activation_by_name(cfg.activation)
  scale = math.prod(cfg.strides)
  height, width, _ = shapes.output_shape
  if height % scale or width % scale:
    raise ValueError(f"strides {list(cfg.strides)} upsample by {scale}, which does not divide the "
                     f"output size {height}x{width}")
  return ConvDecoder(tuple(cfg.features), tuple(cfg.strides), cfg.kernel_size, tuple(shapes.output_shape),
                     cfg.activation)
