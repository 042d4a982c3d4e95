"""Data sources: named loaders returning train/val splits as dicts of arrays."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxtrain.config.schema import DataConfig
from jaxtrain.errors import ConfigError

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Splits:
  """Train and validation examples, each a dict of equally long arrays."""

  train: Arrays
  val: Arrays

  @property
  def num_train(self) -> int:
    return len(next(iter(self.train.values())))


def split_arrays(arrays: Arrays, val_fraction: float, seed: int) -> Splits:
  """Random train/val split with a fixed seed (the same split on every host and run)."""
  n = len(next(iter(arrays.values())))
  if not 0.0 < val_fraction < 1.0:
    raise ConfigError(f"data.val_fraction={val_fraction}: must be strictly between 0 and 1")
  order = np.random.default_rng(seed).permutation(n)
  n_val = max(1, int(round(n * val_fraction)))
  val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
  return Splits(train={k: v[train_idx] for k, v in arrays.items()},
                val={k: v[val_idx] for k, v in arrays.items()})


def digits(cfg: DataConfig) -> Splits:
  """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package).

  x: [N, 64] float32 pixels in [0, 1]; label: [N] int32.
  """
  from sklearn.datasets import load_digits  # heavy import, only when used

  data = load_digits()
  arrays = {"x": (data.data / 16.0).astype(np.float32), "label": data.target.astype(np.int32)}
  return split_arrays(arrays, cfg.val_fraction, cfg.split_seed)


SOURCES: dict[str, Callable[[DataConfig], Splits]] = {"digits": digits}


def load_splits(cfg: DataConfig) -> Splits:
  """Loads the source named by `data.name`."""
  if cfg.name not in SOURCES:
    raise ConfigError(f"data={cfg.name!r} is not a known source; choose one of: {', '.join(SOURCES)}")
  return SOURCES[cfg.name](cfg)
