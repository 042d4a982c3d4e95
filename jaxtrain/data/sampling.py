"""Index sampling: which examples of one dataset each batch takes.

An example stream is an endless sequence of example indices of one dataset;
`take(batch_index, start, count)` returns its positions [start, start + count),
which batch `batch_index` consumes. Every stream is a pure function of its seed
and these arguments, so resuming needs only the position (see mixture.py for how
positions are handed out to batches).
"""

from __future__ import annotations

import functools
import sys
from typing import Protocol, Sequence

import numpy as np


class ExampleStream(Protocol):
  """Random access to the endless index stream of one dataset."""

  def take(self, batch_index: int, start: int, count: int) -> np.ndarray:
    """Indices at stream positions [start, start + count), consumed by batch `batch_index`."""
    ...


class EpochStream:
  """Visits every example once per epoch, in an order drawn from (seed, epoch):
  uniformly random here; subclasses override `order`.

  Works on whole index arrays (one order per epoch, one fancy-indexing gather
  per batch): microseconds per batch, where shuffling example by example costs
  milliseconds. Positions may straddle epochs, so no example is ever dropped.
  """

  def __init__(self, num_examples: int, seed: Sequence[int]):
    if num_examples <= 0:
      raise ValueError(f"an epoch needs examples, got {num_examples=}")
    self.num_examples = num_examples
    self.epoch_length = num_examples
    self.seed = tuple(seed)

  def order(self, epoch: int) -> np.ndarray:
    """The epoch's example order."""
    return np.random.default_rng([*self.seed, epoch]).permutation(self.num_examples)

  @functools.lru_cache(maxsize=4)
  def epoch_order(self, epoch: int) -> np.ndarray:
    return self.order(epoch)

  def take(self, batch_index: int, start: int, count: int) -> np.ndarray:
    del batch_index  # the position alone decides
    positions = np.arange(start, start + count)
    first, last = start // self.epoch_length, max(start + count - 1, start) // self.epoch_length
    if first == last:
      return self.epoch_order(first)[positions - first * self.epoch_length]
    # Positions straddle epoch boundaries: index into the epochs' orders laid end to end.
    orders = np.concatenate([self.epoch_order(e) for e in range(first, last + 1)])
    return orders[positions - first * self.epoch_length]


class ShuffledBatchIndices:
  """Random-access source of index batches: element i holds the example indices
  of batch i of an endless stream that visits every example once per epoch,
  in a new order each epoch (an EpochStream read `batch_size` at a time)."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples <= 0 or batch_size <= 0:
      raise ValueError(f"need examples and a positive batch size, got {num_examples=} {batch_size=}")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self._stream = EpochStream(num_examples, (seed,))

  def __len__(self) -> int:
    return sys.maxsize  # endless; the loop decides when to stop

  def epoch_order(self, epoch: int) -> np.ndarray:
    return self._stream.epoch_order(epoch)

  def __getitem__(self, index: int) -> np.ndarray:
    return self._stream.take(index, index * self.batch_size, self.batch_size)
