"""Mixtures of datasets with weights that may change with the step (curriculum).

Mixture weights are a pure function of the step (data.curriculum), never live
state: Grain may build batches ahead of the loop or in other processes. Batch i
splits its rows between the datasets by a multinomial draw with the weights at
step i (or, with data.group_by_dataset, takes all rows from one dataset drawn
with those weights). The draws of 1,024 batches come from one rng(seed, chunk),
and each dataset's stream position before batch i is the running sum of its
earlier counts, kept per chunk, so any batch is found without replaying the run.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import importlib
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxtrain.errors import ConfigError

CHUNK = 1024  # batches whose counts are drawn together
CURRICULA = ("none", "linear", "staged", "function")


def weight_vector(value: Any, names: Sequence[str], key: str) -> np.ndarray:
  """Weights given as a list (dataset order) or a {name: weight} mapping (missing names: 0), normalised."""
  if isinstance(value, Mapping):
    unknown = sorted(set(value) - set(names))
    if unknown:
      raise ConfigError(f"{key}: unknown dataset(s) {', '.join(map(str, unknown))}; the datasets are: "
                        f"{', '.join(names)}")
    value = [value.get(name, 0.0) for name in names]
  try:
    weights = np.asarray(value, np.float64).reshape(-1)
  except (TypeError, ValueError):
    raise ConfigError(f"{key}: expected a list of {len(names)} numbers or a {{dataset: weight}} mapping") from None
  if len(weights) != len(names):
    raise ConfigError(f"{key}: {len(weights)} weights for {len(names)} datasets ({', '.join(names)})")
  if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not weights.sum() > 0:
    raise ConfigError(f"{key}: weights must be finite, >= 0 and not all 0; got {weights.tolist()}")
  return weights / weights.sum()


def _import_function(path: str) -> Callable[[int], Any]:
  module_name, _, attr = path.partition(":")
  try:
    return getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError, ValueError) as err:
    raise ConfigError(f"data.curriculum.function={path!r}: cannot import it ({err}); "
                      "expected 'package.module:function'") from None


@dataclasses.dataclass(frozen=True)
class WeightSchedule:
  """Step -> normalised mixture weights (a plain object, so Grain's worker processes can pickle it).

  none: `base` at every step; linear: `start` -> `end` over `ramp_steps`, then
  `end`; staged: the weights of the first stage with step < its bound (the last
  stage afterwards); function: `function(step)`, imported from "module:function".
  """

  kind: str
  names: tuple[str, ...]
  base: np.ndarray
  start: np.ndarray | None = None
  end: np.ndarray | None = None
  ramp_steps: int = 1
  bounds: tuple[float, ...] = ()
  stage_weights: tuple[np.ndarray, ...] = ()
  function: str | None = None

  def __call__(self, step: int) -> np.ndarray:
    if self.kind == "linear":
      t = min(step / self.ramp_steps, 1.0)
      w = (1.0 - t) * self.start + t * self.end
      return w / w.sum()
    if self.kind == "staged":
      return self.stage_weights[min(bisect.bisect_right(self.bounds, step), len(self.bounds) - 1)]
    if self.kind == "function":
      return weight_vector(_import_function(self.function)(step), self.names,
                           f"data.curriculum.function={self.function!r} output")
    return self.base


def weight_schedule(data_cfg: Any, names: Sequence[str], sizes: Sequence[int],
                    option_weights: Sequence[float | None] = ()) -> WeightSchedule:
  """The schedule of data.mixture and data.curriculum.

  Without data.mixture.weights the base weights are the datasets' own `weight`
  options (from their YAML files) when every dataset has one, else
  proportional to the datasets' sizes.
  """
  mix, cur = data_cfg.mixture, data_cfg.curriculum
  names = tuple(names)
  if mix.weights is not None:
    base = weight_vector(mix.weights, names, "data.mixture.weights")
  elif option_weights and all(w is not None for w in option_weights):
    base = weight_vector(list(option_weights), names, "the datasets' `weight` options")
  else:
    base = np.asarray(sizes, np.float64) / np.sum(sizes)
  if cur.kind == "none":
    return WeightSchedule("none", names, base)
  if cur.kind == "linear":
    start = weight_vector(cur.start_weights if cur.start_weights is not None else base, names,
                          "data.curriculum.start_weights")
    end = weight_vector(cur.end_weights if cur.end_weights is not None else base, names,
                        "data.curriculum.end_weights")
    return WeightSchedule("linear", names, base, start=start, end=end, ramp_steps=max(1, int(cur.ramp_steps)))
  if cur.kind == "staged":
    if not cur.stages:
      raise ConfigError("data.curriculum.stages: empty; expected a list of {until_step, weights}")
    try:
      bounds = tuple(float("inf") if s.get("until_step") is None else int(s["until_step"]) for s in cur.stages)
      stages = tuple(weight_vector(s["weights"], names, f"data.curriculum.stages[{i}].weights")
                     for i, s in enumerate(cur.stages))
    except (KeyError, TypeError, AttributeError):
      raise ConfigError("data.curriculum.stages: each stage needs until_step and weights") from None
    return WeightSchedule("staged", names, base, bounds=bounds, stage_weights=stages)
  if cur.kind == "function":
    schedule = WeightSchedule("function", names, base, function=str(cur.function))
    schedule(0)  # fail now, in one line, if it cannot be imported or returns nonsense
    return schedule
  raise ConfigError(f"data.curriculum.kind={cur.kind!r}: choose one of: {', '.join(CURRICULA)}")


class BatchAllocation:
  """Which rows of each global batch come from which dataset, as a pure function of (seed, batch).

  `counts(i)` is a [K] vector of rows per dataset (summing to the batch size)
  and `offsets(i)` the [K] stream positions each dataset had reached before
  batch i. With `grouped`, each batch takes all its rows from one dataset.
  """

  def __init__(self, schedule: Callable[[int], np.ndarray], num_datasets: int, batch_size: int, seed: int,
               grouped: bool = False):
    self.schedule = schedule
    self.num_datasets = num_datasets
    self.batch_size = batch_size
    self.seed = seed
    self.grouped = grouped
    self._chunk_starts = [np.zeros(num_datasets, np.int64)]  # stream positions at each chunk start
    self._lock = threading.Lock()  # Grain's read threads may ask for batches concurrently

  def __getstate__(self) -> dict[str, Any]:  # Grain worker processes receive a pickled copy
    return {k: v for k, v in self.__dict__.items() if k != "_lock"}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state, _lock=threading.Lock())

  @functools.lru_cache(maxsize=4)
  def chunk_counts(self, chunk: int) -> np.ndarray:
    """[CHUNK, K] rows per dataset of the chunk's batches."""
    if self.num_datasets == 1:
      return np.full((CHUNK, 1), self.batch_size, np.int64)
    steps = range(chunk * CHUNK, (chunk + 1) * CHUNK)
    probs = np.stack([self.schedule(step) for step in steps])
    rng = np.random.default_rng([self.seed, chunk])
    if self.grouped:
      cdf = np.cumsum(probs, axis=1)
      picks = np.minimum((rng.random((CHUNK, 1)) * cdf[:, -1:] >= cdf).sum(axis=1), self.num_datasets - 1)
      return np.eye(self.num_datasets, dtype=np.int64)[picks] * self.batch_size
    return rng.multinomial(self.batch_size, probs).astype(np.int64)

  def _chunk_start(self, chunk: int) -> np.ndarray:
    # Running sums are extended lazily (a resumed run at step s draws s / 1024 chunks once).
    with self._lock:
      while len(self._chunk_starts) <= chunk:
        last = len(self._chunk_starts) - 1
        self._chunk_starts.append(self._chunk_starts[last] + self.chunk_counts(last).sum(axis=0))
      return self._chunk_starts[chunk]

  @functools.lru_cache(maxsize=4)
  def _positions_in_chunk(self, chunk: int) -> np.ndarray:
    """[CHUNK, K] rows each dataset gave the chunk's earlier batches."""
    counts = self.chunk_counts(chunk)
    return np.cumsum(counts, axis=0) - counts

  def counts(self, batch: int) -> np.ndarray:
    if self.num_datasets == 1:
      return np.array([self.batch_size])
    return self.chunk_counts(batch // CHUNK)[batch % CHUNK]

  def offsets(self, batch: int) -> np.ndarray:
    if self.num_datasets == 1:  # the common case, without any bookkeeping
      return np.array([batch * self.batch_size])
    chunk, row = divmod(batch, CHUNK)
    return self._chunk_start(chunk) + self._positions_in_chunk(chunk)[row]
