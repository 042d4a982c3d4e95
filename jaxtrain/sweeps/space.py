"""The search space: `sweep.params` checked, sampled by an Optuna trial, and written as overrides."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna

from jaxtrain.config.schema import SearchParamConfig
from jaxtrain.errors import ConfigError

TYPES = ("float", "int", "categorical")


def check_space(params: Mapping[str, SearchParamConfig]) -> None:
  """Raises ConfigError (one line naming `sweep.params.<name>`) for an unusable dimension."""
  if not params:
    raise ConfigError("sweep.params: empty search space; give at least one, e.g. "
                      "sweep.params='{optim.lr: {type: float, low: 1e-4, high: 1e-2, log: true}}'")
  for name, spec in params.items():
    where = f"sweep.params.{name}"
    if spec.type not in TYPES:
      raise ConfigError(f"{where}.type={spec.type!r}: choose one of: {', '.join(TYPES)}")
    if spec.type == "categorical":
      if not spec.choices:
        raise ConfigError(f"{where}.choices: a categorical parameter needs a non-empty list of choices")
      continue
    if spec.low is None or spec.high is None or not spec.low <= spec.high:
      raise ConfigError(f"{where}: needs numbers low <= high (got low={spec.low}, high={spec.high})")
    if spec.log and spec.low <= 0:
      raise ConfigError(f"{where}.low={spec.low}: a log-scale parameter needs low > 0")
    if spec.log and spec.step is not None:
      raise ConfigError(f"{where}: step and log cannot be combined")


def suggest(trial: optuna.Trial, params: Mapping[str, SearchParamConfig]) -> dict[str, Any]:
  """One value per dimension, drawn by the trial's sampler (or fixed, for an enqueued or retried trial)."""
  values: dict[str, Any] = {}
  for name, spec in params.items():
    if spec.type == "categorical":
      values[name] = trial.suggest_categorical(name, list(spec.choices))
    elif spec.type == "int":
      values[name] = trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    else:
      values[name] = trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
  return values


def check_points(params: Mapping[str, SearchParamConfig]) -> list[dict[str, Any]]:
  """Points that together use every key and every categorical choice (the low ends otherwise).

  Composing each of them before the first trial finds a misspelt key or option at once.
  """
  base = {name: spec.choices[0] if spec.type == "categorical" else (int(spec.low) if spec.type == "int" else spec.low)
          for name, spec in params.items()}
  points = [base]
  for name, spec in params.items():
    if spec.type == "categorical":
      points += [{**base, name: choice} for choice in spec.choices[1:]]
  return points


def as_overrides(values: Mapping[str, Any]) -> list[str]:
  """Hydra overrides for sampled values (`optim.lr=0.0012`, `optim=adam`)."""
  return [f"{name}={format_value(value)}" for name, value in values.items()]


def format_value(value: Any) -> str:
  """A value as Hydra's override grammar reads it back unchanged."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if value is None:
    return "null"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def merge_overrides(*groups: Sequence[str]) -> list[str]:
  """The overrides of all groups in order, a later one replacing an earlier one for the same key.

  Hydra refuses two values for one config group in one command line, so
  `sweep.trial_overrides`, the command line and the sampled values are folded into one list.
  """
  merged: dict[str, str] = {}
  for group in groups:
    for override in group:
      key = override.split("=", 1)[0].lstrip("+~")
      merged.pop(key, None)  # re-insert: the later value keeps its later position
      merged[key] = override
  return list(merged.values())
