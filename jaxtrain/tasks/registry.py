"""Task registry: built-in tasks, user tasks registered from their own modules,
and plugin discovery (entry points and the JAXTRAIN_PLUGINS variable)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import pkgutil
from typing import Callable, TypeVar

from hydra.core.config_store import ConfigStore

from jaxtrain.errors import ConfigError

_TASKS: dict[str, type] = {}
T = TypeVar("T", bound=type)

ENTRY_POINT_GROUP = "jaxtrain.tasks"
PLUGINS_ENV = "JAXTRAIN_PLUGINS"
_NOT_TASKS = ("base", "registry")


def _builtin_modules() -> list[str]:
  """Every module of jaxtrain.tasks except the machinery: one file per task."""
  import jaxtrain.tasks

  return [f"jaxtrain.tasks.{m.name}" for m in pkgutil.iter_modules(jaxtrain.tasks.__path__)
          if m.name not in _NOT_TASKS]


def register_task(name: str, *, store_config: bool = True) -> Callable[[T], T]:
  """Class decorator: makes a task selectable with `task=<name>`.

  The class needs a `config_class` dataclass (with a `name` field). With
  `store_config`, its defaults are also registered as the Hydra option
  `task/<name>`, so no YAML file is needed for a user task.
  """

  def decorate(cls: T) -> T:
    config_class = getattr(cls, "config_class", None)
    if config_class is None or not dataclasses.is_dataclass(config_class):
      raise TypeError(f"task {name!r}: {cls.__name__}.config_class must be a dataclass")
    _TASKS[name] = cls
    if store_config:
      ConfigStore.instance().store(group="task", name=name, node=config_class(name=name))
    return cls

  return decorate


def load_plugins() -> None:
  """Imports built-in tasks, entry-point plugins and modules named in JAXTRAIN_PLUGINS."""
  modules = _builtin_modules()
  modules += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as err:
      raise ConfigError(f"{PLUGINS_ENV}: cannot import task module {module!r} ({err})") from err
  for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
    entry_point.load()


def task_class(name: str) -> type:
  """The registered task class for `name`, or a ConfigError listing the choices."""
  load_plugins()
  if name not in _TASKS:
    raise ConfigError(f"task={name!r} is not registered; choose one of: {', '.join(sorted(_TASKS))}")
  return _TASKS[name]


def task_names() -> list[str]:
  """Names of every registered task."""
  load_plugins()
  return sorted(_TASKS)
