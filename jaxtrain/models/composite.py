"""Encoder -> latent -> decoder assembled from the configured components, and
applying a module whose non-param variables (BatchNorm statistics, say) are
the TrainState's `model_state`."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from jaxtrain.config.schema import ModelConfig
from jaxtrain.models.registry import Shapes, build_component


class ComponentAutoencoder(nn.Module):
  """`x -> encoder -> latent -> decoder`, each part a registered component."""

  encoder: nn.Module
  latent: nn.Module
  decoder: nn.Module

  def encode(self, x: jax.Array, weight: jax.Array, train: bool = False):
    """`(z, aux_loss [B], latent metrics)` for a batch of examples."""
    return self.latent(self.encoder(x, train), weight, train)

  def __call__(self, x: jax.Array, weight: jax.Array, train: bool = False):
    """`(reconstruction, z, aux_loss [B], latent metrics)`."""
    z, aux, metrics = self.encode(x, weight, train)
    return self.decoder(z, train), z, aux, metrics


def build_autoencoder(model: ModelConfig, input_shape: tuple[int, ...]) -> ComponentAutoencoder:
  """The configured encoder, latent and decoder for examples of `input_shape`."""
  shapes = Shapes(input_shape=tuple(input_shape), latent_dim=model.latent_dim, output_shape=tuple(input_shape))
  return ComponentAutoencoder(encoder=build_component("encoder", model.encoder, shapes),
                              latent=build_component("latent", model.latent, shapes),
                              decoder=build_component("decoder", model.decoder, shapes))


def init_variables(module: nn.Module, rng: jax.Array, *args: Any,
                   method: Callable[..., Any] | None = None, **kwargs: Any) -> tuple[Any, Any]:
  """`(params, model_state)`: the module's params and its other variable collections."""
  variables = dict(module.init(rng, *args, method=method, **kwargs))
  return variables.pop("params", {}), variables


def apply_with_state(module: nn.Module, params: Any, model_state: Any, *args: Any, train: bool,
                     method: Callable[..., Any] | None = None, **kwargs: Any) -> tuple[Any, Any]:
  """`(output, model_state)`; in training the state collections are mutable and updated."""
  variables = {"params": params, **model_state}
  if train and model_state:
    output, updates = module.apply(variables, *args, train=train, method=method, mutable=list(model_state),
                                   **kwargs)
    return output, {**model_state, **updates}
  return module.apply(variables, *args, train=train, method=method, **kwargs), model_state
