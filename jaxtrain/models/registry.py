"""Model components chosen by config groups: `model/encoder`, `model/latent`, `model/decoder`.

A component is a Flax module built from its own config dataclass and the
shapes the data implies. Built-in and user components register the same way,
so `model/encoder=<name>` works for both without a YAML file:

    @register_component("encoder", "my_encoder", MyEncoderConfig)
    def build_my_encoder(cfg: MyEncoderConfig, shapes: Shapes) -> nn.Module: ...
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jaxtrain.errors import ConfigError

KINDS = ("encoder", "latent", "decoder")


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What a component needs to know about the data and its neighbours.

  input_shape: one example of batch["x"] (e.g. (64,), (8, 8, 1), (P, 3)).
  latent_dim: width of the encoder output and of the decoder input.
  output_shape: one example of what the decoder produces (usually input_shape).
  """

  input_shape: tuple[int, ...]
  latent_dim: int
  output_shape: tuple[int, ...]


Builder = Callable[[Any, Shapes], nn.Module]


@dataclasses.dataclass(frozen=True)
class _Component:
  config_class: type
  build: Builder


_COMPONENTS: dict[str, dict[str, _Component]] = {kind: {} for kind in KINDS}


def register_component(kind: str, name: str, config_class: type, *,
                       store_config: bool = True) -> Callable[[Builder], Builder]:
  """Decorator for `build(cfg, shapes) -> nn.Module`: makes `model/<kind>=<name>` selectable.

  `config_class` is a dataclass with a `name` field. With `store_config`, its
  defaults are registered as the Hydra option `model/<kind>/<name>`, so user
  components need no YAML file.
  """
  if kind not in KINDS:
    raise ValueError(f"component kind {kind!r}: choose one of {', '.join(KINDS)}")
  if not dataclasses.is_dataclass(config_class) or "name" not in {f.name for f in dataclasses.fields(config_class)}:
    raise TypeError(f"model/{kind}={name}: config_class must be a dataclass with a `name` field")

  def decorate(build: Builder) -> Builder:
    _COMPONENTS[kind][name] = _Component(config_class, build)
    if store_config:
      ConfigStore.instance().store(group=f"model/{kind}", name=name, node=config_class(name=name))
    return build

  return decorate


def component_names(kind: str) -> list[str]:
  """Registered names for one kind of component."""
  _load_builtin()
  return sorted(_COMPONENTS[kind])


def typed_component(kind: str, node: Any) -> Any:
  """The component's config dataclass filled from a composed node; ConfigError names the key."""
  _load_builtin()
  if isinstance(node, DictConfig):
    node_name = node.get("name")
  elif dataclasses.is_dataclass(node):
    return node
  else:
    node_name = None
  if node_name not in _COMPONENTS[kind]:
    raise ConfigError(f"model/{kind}={node_name}: unknown component; choose one of: "
                      f"{', '.join(component_names(kind))}")
  config_class = _COMPONENTS[kind][node_name].config_class
  try:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_class), node))
  except OmegaConfBaseException as err:
    key = getattr(err, "full_key", "") or ""
    valid = ", ".join(f.name for f in dataclasses.fields(config_class))
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise ConfigError(f"model.{kind}.{key}: {first} (model/{kind}={node_name} keys: {valid})") from None


def build_component(kind: str, cfg: Any, shapes: Shapes) -> nn.Module:
  """The Flax module for a typed component config; ConfigError if it does not fit the data."""
  _load_builtin()
  try:
    return _COMPONENTS[kind][cfg.name].build(cfg, shapes)
  except ValueError as err:  # builders say why the data does not fit them
    raise ConfigError(f"model/{kind}={cfg.name}: {err}") from None


def _load_builtin() -> None:
  # Imported for their registrations; late, because they import this module.
  import jaxtrain.models.components  # noqa: F401
