"""Grain pipelines: shuffled batch indices -> per-process shard -> gather -> prefetch to devices.

Every stage is index-based (Grain MapDataset), so the whole stream is a pure
function of the seed and the iterator position; the position is checkpointed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import grain
import jax
import numpy as np

from jaxtrain.config.schema import DataConfig
from jaxtrain.data.sampling import ShuffledBatchIndices
from jaxtrain.data.sources import Arrays, Source, as_source
from jaxtrain.errors import ConfigError


class ArraySource:
  """Random-access Grain source over a dict of equally long arrays."""

  def __init__(self, arrays: Arrays):
    self._arrays = arrays
    self._len = len(next(iter(arrays.values())))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self._arrays.items()}


def per_process_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch."""
  count = jax.process_count()
  if global_batch_size % count:
    raise ConfigError(f"data.batch_size={global_batch_size} is not divisible by {count} processes")
  return global_batch_size // count


def train_dataset(arrays: Arrays | Source, cfg: DataConfig) -> grain.MapDataset:
  """Infinite, shuffled (a new order every epoch) stream of this process's batches.

  The global example order is the same whatever the process count: process p
  of P takes local batches p, p+P, p+2P, ... of the global stream, which are
  exactly its rows of each global batch.
  """
  local = per_process_batch_size(cfg.batch_size)
  source = as_source(arrays)
  ds = grain.MapDataset.source(ShuffledBatchIndices(len(source), local, cfg.shuffle_seed))
  ds = ds[jax.process_index()::jax.process_count()]
  # One vectorised read per batch (a file source reads only these rows).
  return ds.map(source.get_batch)


def gather(arrays: Arrays, indices: np.ndarray) -> dict[str, np.ndarray]:
  """The rows `indices` of every array: one vectorised copy per key."""
  return {key: value[indices] for key, value in arrays.items()}


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads a ragged last batch to `size` rows and marks real rows with weight 1."""
  n = len(next(iter(batch.values())))
  padded = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
  weight = np.zeros(size, np.float32)
  weight[:n] = 1.0
  padded["weight"] = weight if "weight" not in batch else padded["weight"] * weight
  return padded


def eval_dataset(arrays: Arrays | Source, cfg: DataConfig, multiple_of: int = 1) -> grain.MapDataset:
  """One pass over a split in fixed-size batches (the last padded, with a weight mask).

  Every batch has the same shape, so the eval step compiles once.
  """
  local = per_process_batch_size(cfg.eval_batch_size)
  source = as_source(arrays)
  n = len(source)
  # Never larger than needed: a tiny split should not be padded to a huge batch,
  # but still a multiple of the local devices so it splits evenly.
  needed = -(-n // jax.process_count())
  local = min(local, -(-needed // multiple_of) * multiple_of)
  ds = grain.MapDataset.source(source)
  ds = ds[jax.process_index()::jax.process_count()]
  return ds.batch(local, drop_remainder=False).map(lambda b: _pad_batch(b, local))


def device_iterator(ds: grain.MapDataset, to_device: Callable[[Any], Any], cfg: DataConfig,
                    ) -> grain.DatasetIterator:
  """Host threads read ahead, then batches are put on the devices ahead of use.

  Both prefetch stages are Grain's own, so `get_state()` describes the batches
  the loop has consumed, not the ones still buffered.
  """
  read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch)
  it_ds = ds.to_iter_dataset(read).map(to_device)
  if cfg.device_prefetch > 0:  # 0: put each batch on the devices in the loop's thread
    it_ds = grain.experimental.ThreadPrefetchIterDataset(it_ds, prefetch_buffer_size=cfg.device_prefetch)
  return iter(it_ds)


def global_batch_putter(sharding: jax.sharding.Sharding) -> Callable[[Any], Any]:
  """Turns this process's rows into global arrays laid out by `sharding`."""
  if jax.process_count() == 1:
    # One process holds the whole global batch: a plain device_put is the same
    # layout and ~40% cheaper per batch. (Batches are never donated, so a
    # buffer shared with the numpy source is harmless.)
    return lambda batch: jax.device_put(batch, sharding)

  def put(batch: Any) -> Any:
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  return put

