"""Checks on data before anything is compiled, each failing with one line naming file, key and expectation.

Missing files and keys and arrays of unequal length are caught when a source is
opened (jaxtrain/data/formats.py); here: non-numeric dtypes, empty splits,
NaN/Inf in float inputs (scanned in chunks of bounded size), train/val files
that disagree, and whether the data fit what the task's model expects
(`Task.expected_inputs`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from jaxtrain.data.formats import Feature, Source
from jaxtrain.errors import ConfigError

# Rows per finiteness chunk are chosen so one chunk of one key stays under this.
CHUNK_BYTES = 32 * 2**20
NUMERIC_KINDS = "biuf"  # bool, int, unsigned, float
KIND_NAMES = {"b": "bool", "i": "int", "u": "unsigned int", "f": "float", "c": "complex"}


def kind_names(kinds: str) -> str:
  """'iu' -> 'int or unsigned int'."""
  return " or ".join(KIND_NAMES.get(k, k) for k in kinds)


def validate_split(source: Source, split: str, check_finite: bool = True) -> None:
  """One split of one dataset: not empty, numeric arrays, and (optionally) finite floats."""
  if len(source) == 0:
    raise ConfigError(f"{source.description}: the {split} split is empty "
                      f"(needs at least one example; check val_fraction or the file)")
  for key, feature in source.features.items():
    if feature.dtype.kind not in NUMERIC_KINDS:
      raise ConfigError(f"{source.description}: key {key!r} has dtype {feature.dtype}; "
                        f"expected numbers ({kind_names(NUMERIC_KINDS)})")
  if check_finite:
    check_all_finite(source, split)


def check_all_finite(source: Source, split: str = "train") -> None:
  """Scans every float key for NaN/Inf in chunks of rows (bounded memory) and names the first bad row."""
  float_keys = [k for k, f in source.features.items() if f.dtype.kind == "f"]
  if not float_keys:
    return
  row_bytes = max(math.prod(source.features[k].shape) * source.features[k].dtype.itemsize for k in float_keys)
  chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
  for start in range(0, len(source), chunk):
    rows = np.arange(start, min(start + chunk, len(source)))
    batch = source.get_batch(rows)
    for key in float_keys:
      finite = np.isfinite(batch[key].reshape(len(rows), -1)).all(axis=1)
      if not finite.all():
        row = int(start + np.argmin(finite))
        # A split of a file is a view on some of its rows: name the row of the file.
        row = int(source.indices[row]) if hasattr(source, "indices") else row
        raise ConfigError(f"{source.description}: key {key!r} has NaN or Inf in row {row} ({split} split; "
                          "float inputs must be finite, data.check_finite=false skips this)")


def same_features(train: Source, val: Source) -> None:
  """The val split must have the train split's keys with the same per-example shapes and dtypes."""
  if set(train.features) != set(val.features):
    raise ConfigError(f"{val.description}: val keys {sorted(val.features)} differ from the train "
                      f"keys {sorted(train.features)} of {train.description}")
  for key, feature in train.features.items():
    other = val.features[key]
    if other != feature:
      raise ConfigError(f"{val.description}: key {key!r} is {_describe(other)} in val but "
                        f"{_describe(feature)} in train ({train.description})")


def _describe(feature: Feature) -> str:
  return f"{feature.dtype} {list(feature.shape)} per example"


# What a task needs of one key: the per-example rank (int) or exact shape
# (tuple, None for any size), and the accepted dtype kinds ("f", "iu", ...).
InputSpec = tuple[Any, str]


def check_compatibility(expected: Mapping[str, InputSpec] | None, sources: Sequence[Source], who: str) -> None:
  """Every source has every key `who` (e.g. "task=classifier") expects, of the expected rank/shape and kind."""
  if not expected:
    return
  for source in sources:
    for key, (rank_or_shape, kinds) in expected.items():
      if key not in source.features:
        raise ConfigError(f"{source.description}: {who} needs key {key!r} "
                          f"({_expectation(rank_or_shape, kinds)}), the data have: {', '.join(source.features)}")
      feature = source.features[key]
      if not _matches(feature.shape, rank_or_shape) or feature.dtype.kind not in kinds:
        raise ConfigError(f"{source.description}: key {key!r} is {_describe(feature)}, but {who} "
                          f"expects {_expectation(rank_or_shape, kinds)}")


def _matches(shape: tuple[int, ...], rank_or_shape: Any) -> bool:
  if rank_or_shape is None:
    return True
  if isinstance(rank_or_shape, int):
    return len(shape) == rank_or_shape
  wanted = tuple(rank_or_shape)
  return len(shape) == len(wanted) and all(w is None or w == s for s, w in zip(shape, wanted))


def _expectation(rank_or_shape: Any, kinds: str) -> str:
  if rank_or_shape is None:
    where = "any shape"
  elif isinstance(rank_or_shape, int):
    where = f"rank {rank_or_shape} per example"
  else:
    where = f"shape {['*' if d is None else d for d in rank_or_shape]} per example"
  return f"{kind_names(kinds)}, {where}"
