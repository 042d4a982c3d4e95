"""Data sources: named loaders returning train/val splits as dicts of arrays, and
`load_datasets`, the named train/val sources of a run (one for a built-in, one per
YAML of a dataset-config directory for data=dataset_dir)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import Any, Callable

import numpy as np

from jaxtrain.config.schema import DataConfig
from jaxtrain.data import cache as data_cache
from jaxtrain.data import digits_layouts, text, tictactoe
from jaxtrain.data.formats import ArraySource, Source
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


def _digits_arrays() -> Arrays:
  """scikit-learn's digits, kept as arrays in the data cache after the first load:
  importing scikit-learn (and SciPy behind it) costs seconds at every start,
  reading the cached copy milliseconds."""
  version = importlib.metadata.version("scikit-learn")  # without importing it
  cached = data_cache.data_cache_dir() / f"digits-sklearn-{version}.npz"
  if cached.exists():
    with np.load(cached) as npz:
      return {"x": npz["x"], "label": npz["label"]}
  from sklearn.datasets import load_digits  # heavy import, only when not cached

  data = load_digits()
  arrays = {"x": (data.data / 16.0).astype(np.float32), "label": data.target.astype(np.int32)}
  try:
    data_cache.write_npz_atomically(cached, arrays)
  except OSError:  # an unwritable cache only costs the next start its import
    pass
  return arrays


def digits(cfg: DataConfig) -> Splits:
  """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package).

  x: [N, 64] float32 pixels in [0, 1]; label: [N] int32.
  """
  return split_arrays(_digits_arrays(), cfg.val_fraction, cfg.split_seed)


def digits_images(cfg: DataConfig) -> Splits:
  """The digits as images: x [N, 8, 8, 1]; same split and labels as `digits`."""
  arrays = _digits_arrays()
  arrays["x"] = digits_layouts.as_images(arrays["x"])
  return split_arrays(arrays, cfg.val_fraction, cfg.split_seed)


def digits_points(cfg: DataConfig) -> Splits:
  """The digits as point clouds: x [N, 64, 3] (row, col, intensity in [0, 1]) and
  mask [N, 64] (1.0 for a lit pixel, 0.0 for padding); same split and labels as `digits`."""
  arrays = _digits_arrays()
  arrays["x"], arrays["mask"] = digits_layouts.as_point_clouds(arrays["x"])
  return split_arrays(arrays, cfg.val_fraction, cfg.split_seed)


SOURCES: dict[str, Callable[[DataConfig], Splits]] = {
    "digits": digits,
    "digits_images": digits_images,
    "digits_points": digits_points,
    "text": text.text,
    "tictactoe": tictactoe.tictactoe,
}


def load_splits(cfg: DataConfig) -> Splits:
  """Loads the source named by `data.name`."""
  if cfg.name not in SOURCES:
    raise ConfigError(f"data={cfg.name!r} is not a known source; choose one of: {', '.join(SOURCES)}, "
                      "dataset_dir")
  return SOURCES[cfg.name](cfg)


@dataclasses.dataclass(frozen=True)
class NamedDataset:
  """One dataset of a run: its train and val sources and its per-dataset options
  (from its YAML in a dataset-config directory, e.g. a mixture weight)."""

  name: str
  train: Source
  val: Source
  options: dict[str, Any] = dataclasses.field(default_factory=dict)


class SubsetSource:
  """The rows `indices` of another source (a train or val split of one file), without copying."""

  def __init__(self, parent: Source, indices: np.ndarray):
    self.parent = parent
    self.indices = np.asarray(indices, np.int64)
    self.features = parent.features
    self.description = parent.description

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.parent[int(self.indices[index])]

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return self.parent.get_batch(self.indices[np.asarray(indices)])


class ConcatSource:
  """Several sources with the same keys, shapes and dtypes, end to end; a batch reads
  each source once for the rows that fall in it."""

  def __init__(self, sources: list[Source]):
    first = sources[0]
    for other in sources[1:]:
      for key, feature in first.features.items():
        if other.features.get(key) != feature:
          found = other.features.get(key)
          raise ConfigError(f"{other.description}: key {key!r} is "
                            f"{'missing' if found is None else f'{found.dtype} {list(found.shape)}'} but "
                            f"{first.description} has {feature.dtype} {list(feature.shape)} per example "
                            "(datasets trained together need the same keys, shapes and dtypes)")
    self.sources = sources
    self.features = first.features
    self.description = ", ".join(s.description for s in sources)
    self._starts = np.cumsum([0] + [len(s) for s in sources])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    which = int(np.searchsorted(self._starts, index, side="right")) - 1
    return self.sources[which][int(index - self._starts[which])]

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices)
    which = np.searchsorted(self._starts, indices, side="right") - 1
    out = {k: np.empty((len(indices),) + f.shape, f.dtype) for k, f in self.features.items()}
    for i in np.unique(which):
      rows = which == i
      part = self.sources[i].get_batch(indices[rows] - self._starts[i])
      for key in out:
        out[key][rows] = part[key]
    return out


def concatenated(sources: list[Source]) -> Source:
  """One source over `sources` end to end (the only one as is)."""
  return sources[0] if len(sources) == 1 else ConcatSource(sources)


def as_source(data: Source | Arrays) -> Source:
  """A Source as is; a dict of arrays wrapped as an in-memory source."""
  return ArraySource(data) if isinstance(data, dict) else data


def load_datasets(cfg: DataConfig) -> list[NamedDataset]:
  """The run's datasets: one per YAML of `data.dataset_configs_path` for data=dataset_dir
  (sorted by file name, at most `data.max_datasets`), else the built-in `data.name`."""
  if cfg.name == "dataset_dir":
    from jaxtrain.data import dataset_dir  # noqa: PLC0415 (only this mode reads YAML files)

    return dataset_dir.load_datasets(cfg)
  splits = load_splits(cfg)
  return [NamedDataset(cfg.name, ArraySource(splits.train, f"data={cfg.name} (train)"),
                       ArraySource(splits.val, f"data={cfg.name} (val)"))]
