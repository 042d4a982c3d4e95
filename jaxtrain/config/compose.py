"""Composing configs with Hydra, and turning Hydra's errors into one-line messages."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Callable, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jaxtrain.config.schema import Config
from jaxtrain.errors import ConfigError
from jaxtrain.track import rundir

SCHEMA_NAME = "jaxtrain_schema"
CONFIG_NAME = "config"
# Hydra's defaults of this version (the working directory stays unchanged), wherever Hydra starts.
HYDRA_VERSION_BASE = "1.3"


def config_dir() -> str:
  """Absolute path of the shipped config tree: the package data `jaxtrain.configs`
  when installed, else the source checkout's top-level configs/."""
  try:
    return str(Path(str(importlib.resources.files("jaxtrain.configs"))).absolute())
  except ModuleNotFoundError:
    return str(Path(__file__).resolve().parents[2] / "configs")


def register() -> None:
  """Registers the schema and the run-directory resolvers (idempotent)."""
  store = ConfigStore.instance()
  if f"{SCHEMA_NAME}.yaml" not in store.repo:
    # Once per process: storing converts the whole schema (~30 ms), and loads hand out deep copies.
    store.store(name=SCHEMA_NAME, node=Config)
  resolvers = {
      "jaxtrain_run_dir": rundir.run_dir_for,
      "jaxtrain_sweep_dir": rundir.sweep_dir_for,
  }
  for name, fn in resolvers.items():
    if not OmegaConf.has_resolver(name):
      # Cached: the directories embed a timestamp, and Hydra resolves hydra.sweep.dir
      # once for the sweep and again for every job (it copies the resolver cache from
      # the sweep's config to each job's), so uncached each job got its own exp_ dir.
      OmegaConf.register_new_resolver(name, fn, use_cache=True)


def compose(overrides: Sequence[str] = ()) -> DictConfig:
  """The config for `overrides` (Hydra syntax), with the `hydra` node included.

  Raises ConfigError with a one-line message for any bad override.
  """
  from jaxtrain.tasks.registry import load_plugins

  load_plugins()
  register()
  overrides = list(overrides)
  GlobalHydra.instance().clear()
  try:
    with initialize_config_dir(config_dir=config_dir(), version_base=HYDRA_VERSION_BASE, job_name="jaxtrain"):
      return checked(lambda: hydra_compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True), overrides)
  finally:
    GlobalHydra.instance().clear()


def checked(compose_fn: Callable[[], DictConfig], overrides: Sequence[str]) -> DictConfig:
  """`compose_fn()`, a Hydra composition of `overrides`, with its errors as one-line ConfigErrors."""
  try:
    return compose_fn()
  except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
    raise ConfigError(describe_error(err, overrides)) from None


def describe_error(err: Exception, overrides: Sequence[str]) -> str:
  """One line naming the key or option at fault and the valid choices."""
  if isinstance(err, MissingConfigException) and err.missing_cfg_file:
    group, _, option = err.missing_cfg_file.rpartition("/")
    choices = ", ".join(sorted(err.options or [])) or "(none)"
    return f"{group}={option}: unknown option for '{group}'; choose one of: {choices}"
  cause = err.__cause__ or err.__context__ or err
  full_key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
  first_line = _first_line(cause)
  if isinstance(err, OverrideParseException):
    return f"cannot parse override: {_first_line(err)}"
  if full_key and ("not in struct" in str(cause) or "Key '" in first_line):
    return f"{full_key}: unknown key; valid keys here: {', '.join(_sibling_keys(full_key))}"
  if full_key:
    return f"{full_key}: {first_line}"
  match = re.search(r"Could not override '([^']+)'", str(err))
  if match:
    return f"{match.group(1)}: unknown key; valid keys here: {', '.join(_sibling_keys(match.group(1)))}"
  return _first_line(err)


def _first_line(err: BaseException) -> str:
  text = str(err).strip()
  return text.splitlines()[0] if text else type(err).__name__


def _sibling_keys(full_key: str) -> list[str]:
  """The keys that do exist next to `full_key` in the default config."""
  parent = full_key.rpartition(".")[0]
  GlobalHydra.instance().clear()
  try:
    with initialize_config_dir(config_dir=config_dir(), version_base=HYDRA_VERSION_BASE, job_name="jaxtrain"):
      node = hydra_compose(CONFIG_NAME)
    if parent:
      node = OmegaConf.select(node, parent)
    return sorted(node.keys()) if isinstance(node, DictConfig) else []
  except Exception:  # the hint is best effort; the message above already names the key
    return []
  finally:
    GlobalHydra.instance().clear()


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
  """Every job of a `--multirun` sweep as a plain override list (Hydra's own expansion)."""
  from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
  from hydra.core.override_parser.overrides_parser import OverridesParser

  try:
    parsed = OverridesParser.create().parse_overrides(list(overrides))
  except OverrideParseException as err:
    raise ConfigError(f"cannot parse override: {_first_line(err)}") from None
  batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
  return [job for batch in batches for job in batch]
