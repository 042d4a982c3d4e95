"""Per-example weighted sampling from a weight column (data.sampling).

- `weighted`: with replacement; batch i draws its examples by inverse CDF from
  uniforms of rng(seed, i), so the chance of example j is w_j / sum(w) at every draw.
- `weighted_no_replacement`: each epoch is a weighted random permutation
  (Efraimidis-Spirakis keys u^(1/w) from rng(seed, epoch), sorted), so every
  example with w > 0 appears exactly once per epoch and heavier ones come earlier.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxtrain.data.sampling import EpochStream, ExampleStream
from jaxtrain.errors import ConfigError

KINDS = ("uniform", "weighted", "weighted_no_replacement")
READ_ROWS = 65536  # rows per read when loading a weight column


def check_weights(weights: np.ndarray, what: str) -> np.ndarray:
  """float64 weights, or a one-line ConfigError when some are negative or not finite, or all are zero."""
  weights = np.asarray(weights, np.float64).reshape(-1)
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise ConfigError(f"{what}: sampling weights must be finite and >= 0")
  if not weights.sum() > 0:
    raise ConfigError(f"{what}: every sampling weight is 0; nothing could be drawn")
  return weights


def inverse_cdf_draw(cdf: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
  """`count` indices drawn with probabilities given by the normalised cumulative sum `cdf`."""
  picks = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
  return np.minimum(picks, len(cdf) - 1)  # u * cdf[-1] can round up to cdf[-1]


class WeightedStream:
  """With replacement: positions do not matter, batch i's draws come from rng(seed, i)."""

  def __init__(self, weights: np.ndarray, seed: Sequence[int]):
    self.cdf = np.cumsum(weights)
    self.seed = tuple(seed)

  def take(self, batch_index: int, start: int, count: int) -> np.ndarray:
    del start
    return inverse_cdf_draw(self.cdf, np.random.default_rng([*self.seed, batch_index]), count)


class WeightedEpochStream(EpochStream):
  """Each epoch: the examples with w > 0 in Efraimidis-Spirakis order from rng(seed, epoch).

  Sorting by log(u) / w (the log of u^(1/w), same order) picks each next
  example with probability proportional to its weight among those left.
  """

  def __init__(self, weights: np.ndarray, seed: Sequence[int]):
    self.positive = np.flatnonzero(weights > 0)
    self.positive_weights = weights[self.positive]
    super().__init__(len(self.positive), seed)

  def order(self, epoch: int) -> np.ndarray:
    u = np.random.default_rng([*self.seed, epoch]).random(len(self.positive))
    keys = np.log(u) / self.positive_weights
    return self.positive[np.argsort(-keys, kind="stable")]


def example_stream(kind: str, num_examples: int, weights: np.ndarray | None, seed: Sequence[int]) -> ExampleStream:
  """The stream of one dataset for data.sampling.kind (weights: its weight column, for weighted kinds)."""
  if kind == "uniform":
    return EpochStream(num_examples, seed)
  if kind == "weighted":
    return WeightedStream(weights, seed)
  if kind == "weighted_no_replacement":
    return WeightedEpochStream(weights, seed)
  raise ConfigError(f"data.sampling.kind={kind!r}: choose one of: {', '.join(KINDS)}")


def weight_column(source, key: str, dataset: str) -> np.ndarray:
  """The weight column `key` of a source as float64 [N] (one read of that key)."""
  if key not in source.features:
    raise ConfigError(f"data.sampling.weight_key={key!r}: dataset {dataset!r} has no such key; "
                      f"it has: {', '.join(sorted(source.features))}")
  if source.features[key].shape not in ((), (1,)):
    raise ConfigError(f"data.sampling.weight_key={key!r}: dataset {dataset!r} holds shape "
                      f"{list(source.features[key].shape)} per example; expected one number per example")
  # In slices: a file source then holds one slice of its other keys in memory, never the whole file.
  column = np.concatenate([source.get_batch(np.arange(start, min(start + READ_ROWS, len(source))))[key]
                           for start in range(0, len(source), READ_ROWS)])
  return check_weights(column, f"data.sampling.weight_key={key!r} of dataset {dataset!r}")
