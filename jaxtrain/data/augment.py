"""Augmentations (data.augment): named, registered batch transforms with deterministic randomness.

An augmentation is `fn(batch, rng, **options) -> batch` over one host batch
(numpy, vectorised over its rows) with a `np.random.Generator`. The stage is
Grain's `random_map`, whose generator is seeded from (seed, batch position):
a resumed run augments every batch exactly as the uninterrupted one did. The
seed also mixes in the process index, so that processes holding different
rows of one global batch draw independently (augmentation draws thus depend
on the process count, like any per-process pipeline).

data.augment lists entries as names or {name: ..., option: value}; a name is a
registered augmentation or "package.module:function". A task registers its own
with `@register_augmentation("name")` (e.g. board symmetries that also permute
a policy target, via `dihedral_transform`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxtrain.errors import ConfigError

Batch = dict[str, np.ndarray]
Augmentation = Callable[..., Batch]
AUGMENTATIONS: dict[str, Augmentation] = {}


def register_augmentation(name: str) -> Callable[[Augmentation], Augmentation]:
  """Decorator: makes `fn(batch, rng, **options) -> batch` available as data.augment=[name]."""

  def register(fn: Augmentation) -> Augmentation:
    AUGMENTATIONS[name] = fn
    return fn

  return register


def _per_example_shape(rows: int, x: np.ndarray) -> tuple[int, ...]:
  return (rows,) + (1,) * (x.ndim - 1)


@register_augmentation("gaussian_noise")
def gaussian_noise(batch: Batch, rng: np.random.Generator, *, key: str = "x", std: float = 0.05) -> Batch:
  """Adds N(0, std^2) noise to batch[key]."""
  x = batch[key]
  return {**batch, key: (x + rng.normal(0.0, std, x.shape)).astype(x.dtype)}


@register_augmentation("flip")
def flip(batch: Batch, rng: np.random.Generator, *, key: str = "x", axis: int = 1, prob: float = 0.5) -> Batch:
  """Reverses batch[key] along example axis `axis` (0 = the first axis after the batch) for a
  random `prob` share of the rows (e.g. axis=1 of [B, H, W, C] images: a horizontal flip)."""
  x = batch[key]
  chosen = (rng.random(len(x)) < prob).reshape(_per_example_shape(len(x), x))
  return {**batch, key: np.where(chosen, np.flip(x, axis=axis + 1), x)}


def dihedral_transform(x: np.ndarray, k: int, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
  """Symmetry `k` in 0..7 of the square grid on `axes` of x: k % 4 quarter turns, then a
  transpose when k >= 4 (the 8 symmetries of a square board)."""
  x = np.rot90(x, k % 4, axes=axes)
  return np.swapaxes(x, *axes) if k >= 4 else x


@register_augmentation("dihedral")
def dihedral(batch: Batch, rng: np.random.Generator, *, key: str = "x", axes: Sequence[int] = (0, 1)) -> Batch:
  """One of the 8 symmetries of a square grid per row of batch[key] (axes: the grid's two example axes)."""
  x = batch[key]
  grid_axes = (axes[0] + 1, axes[1] + 1)
  if x.shape[grid_axes[0]] != x.shape[grid_axes[1]]:
    raise ConfigError(f"data.augment dihedral: {key!r} is {list(x.shape[1:])} per example; "
                      f"axes {list(axes)} must have equal sizes")
  k = rng.integers(0, 8, len(x))
  out = np.empty_like(x)
  for symmetry in np.unique(k):
    rows = k == symmetry
    out[rows] = dihedral_transform(x[rows], int(symmetry), grid_axes)
  return {**batch, key: out}


def _resolve(name: str) -> Augmentation:
  if name in AUGMENTATIONS:
    return AUGMENTATIONS[name]
  if ":" in name:
    module_name, _, attr = name.partition(":")
    try:
      return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
      raise ConfigError(f"data.augment: cannot import {name!r} ({err})") from None
  raise ConfigError(f"data.augment: unknown augmentation {name!r}; choose one of: "
                    f"{', '.join(sorted(AUGMENTATIONS))} or 'package.module:function'")


class Augmenter:
  """The configured augmentations applied in order; a plain object, so worker processes can pickle it."""

  def __init__(self, entries: Sequence[Any]):
    self.steps: list[tuple[str, dict[str, Any]]] = []
    for entry in entries:
      if isinstance(entry, str):
        name, options = entry, {}
      elif isinstance(entry, Mapping) and "name" in entry:
        name, options = str(entry["name"]), {k: v for k, v in entry.items() if k != "name"}
      else:
        raise ConfigError(f"data.augment: entry {entry!r}: expected a name or {{name: ..., option: value}}")
      _resolve(name)  # fail at build time, not in a reader thread
      self.steps.append((name, options))

  def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
    for name, options in self.steps:
      try:
        batch = _resolve(name)(batch, rng, **options)
      except (KeyError, TypeError) as err:
        raise ConfigError(f"data.augment {name} {options}: {type(err).__name__}: {err}") from None
    return batch


def augment_seed(seed: int, process_index: int) -> int:
  """A 32-bit random_map seed from the shuffle seed and this process's index."""
  return int(np.random.SeedSequence([seed, 7, process_index]).generate_state(1)[0])
