"""Batches grouped by dataset (data.group_by_dataset) and the feature checks of a mixture.

Rows of different datasets can share a batch only when the datasets agree on
every key's per-example shape and dtype. Grouped batches lift that: each batch
comes from one dataset and carries its index as a [B] int32 "dataset" key (for
per-dataset readout heads). The compiled train step (ShapeCompiledStep) keeps
one executable per distinct batch signature, so datasets that share a shape
share a compilation: K datasets with S distinct shapes compile S times, never K.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxtrain.errors import ConfigError

DATASET_KEY = "dataset"
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


def feature_signature(source: Any) -> Signature:
  """(key, per-example shape, dtype) of every key of a source, read from its first example."""
  first = source.get_batch(np.zeros(1, np.int64))
  return tuple(sorted((key, tuple(value.shape[1:]), str(value.dtype)) for key, value in first.items()))


def check_mixable(names: Sequence[str], signatures: Sequence[Signature], grouped: bool) -> None:
  """One-line ConfigError when datasets that would share a batch differ in keys, shapes or dtypes."""
  if grouped or len(set(signatures)) <= 1:
    return
  first = signatures[0]
  for name, signature in zip(names[1:], signatures[1:]):
    if signature != first:
      differ = sorted(set(signature) ^ set(first))
      raise ConfigError(f"datasets {names[0]!r} and {name!r} cannot share a batch: they differ in "
                        f"{', '.join(f'{k} {list(s)} {d}' for k, s, d in differ)}; "
                        "set data.group_by_dataset=true to batch each dataset on its own")


def distinct_shapes(signatures: Sequence[Signature]) -> int:
  """How many distinct batch signatures (hence train-step compilations) grouped batches produce."""
  return len(set(signatures))
