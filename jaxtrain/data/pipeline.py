"""Grain pipelines: batch plans (mixture/curriculum -> per-dataset sampling or mining)
-> per-process rows -> gather -> augment -> prefetch to devices.

Every stage is index-based (Grain MapDataset), so the whole stream is a pure
function of the seed and the iterator position (and, with mining, of the
mining table's versions); both are checkpointed with the iterator.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Sequence

import absl.flags
import grain
import jax
import numpy as np

from jaxtrain.config.schema import DataConfig
from jaxtrain.data import grouping, mixture, weighted
from jaxtrain.data.augment import Augmenter, augment_seed
from jaxtrain.data.block_put import BlockPut, BlockPutIterDataset
from jaxtrain.data.grouping import DATASET_KEY
from jaxtrain.data.mining import INDEX_KEY, MinedStream, MiningStateIterDataset, MiningTable
from jaxtrain.data.mining import check_config as check_mining_config
from jaxtrain.data.mixture import BatchAllocation
from jaxtrain.data.sampling import ExampleStream
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


@dataclasses.dataclass(frozen=True)
class TrainSet:
  """One dataset's training source (anything with len() and get_batch) and its options."""

  name: str
  train: Any
  options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainPipeline:
  """This process's endless train batches, and the mining table that steers them (if any)."""

  dataset: grain.MapDataset
  mining_table: MiningTable | None


def per_process_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch."""
  count = jax.process_count()
  if global_batch_size % count:
    raise ConfigError(f"data.batch_size={global_batch_size} is not divisible by {count} processes")
  return global_batch_size // count


class BatchPlans:
  """Random-access source: element i is the (dataset, example) of each of this
  process's rows of global batch i.

  The whole global batch is planned from (seed, i) alone, the same on every
  process, and process p keeps rows [p*L, (p+1)*L): the example order is the
  same whatever the process count.
  """

  def __init__(self, allocation: BatchAllocation, streams: Sequence[ExampleStream], seed: int,
               shuffle_rows: bool):
    self.allocation, self.streams, self.seed, self.shuffle_rows = allocation, list(streams), seed, shuffle_rows
    self.local = per_process_batch_size(allocation.batch_size)
    self.rows = slice(jax.process_index() * self.local, (jax.process_index() + 1) * self.local)

  def __len__(self) -> int:
    return sys.maxsize  # endless; the loop decides when to stop

  def __getitem__(self, index: int) -> tuple[int, np.ndarray, np.ndarray]:
    counts, offsets = self.allocation.counts(index), self.allocation.offsets(index)
    if len(self.streams) == 1:
      examples = self.streams[0].take(index, int(offsets[0]), int(counts[0]))
      datasets = np.zeros(len(examples), np.int32)
    else:
      datasets = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
      examples = np.concatenate([self.streams[k].take(index, int(offsets[k]), int(counts[k]))
                                 for k in range(len(counts)) if counts[k]])
    if self.shuffle_rows:  # rows of several datasets: spread them over processes and devices
      order = np.random.default_rng([self.seed, 2, index]).permutation(len(examples))
      datasets, examples = datasets[order], examples[order]
    return index, datasets[self.rows], examples[self.rows]


class GatherRows:
  """A plan -> the batch: each dataset's rows read with one get_batch call."""

  def __init__(self, sources: Sequence[Any], offsets: np.ndarray, add_dataset: bool, add_index: bool):
    self.sources, self.offsets, self.add_dataset, self.add_index = list(sources), offsets, add_dataset, add_index

  def __call__(self, plan: tuple[int, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    _, datasets, examples = plan
    present = [0] if len(self.sources) == 1 else np.unique(datasets)
    if len(present) == 1:
      batch = dict(self.sources[present[0]].get_batch(examples))
    else:
      parts = {k: (datasets == k, self.sources[k].get_batch(examples[datasets == k])) for k in present}
      first = next(iter(parts.values()))[1]
      batch = {key: np.empty((len(examples),) + value.shape[1:], value.dtype) for key, value in first.items()}
      for rows, part in parts.values():
        for key, value in part.items():
          batch[key][rows] = value
    if self.add_dataset:
      batch[DATASET_KEY] = datasets
    if self.add_index:
      batch[INDEX_KEY] = (self.offsets[datasets] + examples).astype(np.int32)
    return batch


def _streams(sets: Sequence[TrainSet], cfg: DataConfig, table: MiningTable | None,
             offsets: np.ndarray) -> list[ExampleStream]:
  """Each dataset's example stream, per data.sampling and data.mining."""
  if cfg.sampling.kind not in weighted.KINDS:
    raise ConfigError(f"data.sampling.kind={cfg.sampling.kind!r}: choose one of: {', '.join(weighted.KINDS)}")
  streams = []
  for k, item in enumerate(sets):
    seed = (cfg.shuffle_seed,) if len(sets) == 1 else (cfg.shuffle_seed, 1000 + k)
    n = len(item.train)
    weights = None
    if cfg.sampling.kind != "uniform" or (table is not None and cfg.sampling.weight_key):
      if not cfg.sampling.weight_key:
        raise ConfigError(f"data.sampling.kind={cfg.sampling.kind}: needs data.sampling.weight_key, "
                          "the per-example weight column")
      weights = weighted.weight_column(item.train, cfg.sampling.weight_key, item.name)
    if table is not None:
      mining = cfg.mining
      streams.append(MinedStream(table, int(offsets[k]), weights if weights is not None else np.ones(n), seed,
                                 mining.mix, mining.power, mining.temperature))
    else:
      streams.append(weighted.example_stream(cfg.sampling.kind, n, weights, seed))
  return streams


def train_pipeline(sets: Sequence[TrainSet], cfg: DataConfig) -> TrainPipeline:
  """Plans -> rows gathered per dataset -> augmentation: this process's endless train batches."""
  names = tuple(item.name for item in sets)
  sizes = [len(item.train) for item in sets]
  signatures = [grouping.feature_signature(item.train) for item in sets]
  grouping.check_mixable(names, signatures, cfg.group_by_dataset)
  schedule = mixture.weight_schedule(cfg, names, sizes, [item.options.get("weight") for item in sets])
  allocation = BatchAllocation(schedule, len(sets), cfg.batch_size, cfg.shuffle_seed, grouped=cfg.group_by_dataset)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  table = None
  if cfg.mining.enabled:
    check_mining_config(cfg.mining)
    if cfg.worker_count:
      raise ConfigError("data.mining.enabled=true needs data.worker_count=0: worker processes cannot see "
                        "the mining table, which the training process updates")
    table = MiningTable(int(sum(sizes)), cfg.mining.every, cfg.mining.ema)
  plans = BatchPlans(allocation, _streams(sets, cfg, table, offsets), cfg.shuffle_seed,
                     shuffle_rows=len(sets) > 1 and not cfg.group_by_dataset)
  gather_rows = GatherRows([item.train for item in sets], offsets,
                           add_dataset=len(sets) > 1 or cfg.group_by_dataset, add_index=table is not None)
  ds = grain.MapDataset.source(plans).map(gather_rows)
  if cfg.augment:
    ds = ds.random_map(Augmenter(cfg.augment), seed=augment_seed(cfg.shuffle_seed, jax.process_index()))
  return TrainPipeline(dataset=ds, mining_table=table)


def train_dataset(arrays: Arrays | Source, cfg: DataConfig) -> grain.MapDataset:
  """Infinite, shuffled (a new order every epoch) stream of this process's batches of one dataset."""
  return train_pipeline([TrainSet("train", as_source(arrays))], cfg).dataset


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
                    mining_table: MiningTable | None = None,
                    blocks: tuple[BlockPut, int] | None = None) -> grain.DatasetIterator:
  """Host threads (or data.worker_count processes) read ahead, then batches are put on
  the devices ahead of use: one by one with `to_device`, or with `blocks` (a BlockPut and
  its length) several per transfer.

  Every prefetch stage is Grain's own, so `get_state()` describes the batches
  the loop has consumed, not the ones still buffered; with mining it also holds
  the mining table.
  """
  read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch)
  it_ds = ds.to_iter_dataset(read)
  if cfg.worker_count > 0:
    # Grain's workers read absl flags; outside an absl program they must be marked parsed first.
    absl.flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
  it_ds = BlockPutIterDataset(it_ds, *blocks) if blocks is not None else it_ds.map(to_device)
  if cfg.device_prefetch > 0:  # 0: put each batch on the devices in the loop's thread
    it_ds = grain.experimental.ThreadPrefetchIterDataset(it_ds, prefetch_buffer_size=cfg.device_prefetch)
  if mining_table is not None:
    it_ds = MiningStateIterDataset(it_ds, mining_table)
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

