"""Index sampling: which examples make up each batch of an infinite, shuffled stream."""

from __future__ import annotations

import functools
import sys

import numpy as np


class ShuffledBatchIndices:
  """Random-access source of index batches: element i holds the example indices
  of batch i of an endless stream that visits every example once per epoch,
  in a new order each epoch.

  Each epoch's order is a permutation drawn from (seed, epoch), so any batch is
  a pure function of its position: resuming needs only the position. Batches
  may straddle an epoch boundary, so no example is ever dropped.

  Working on whole index arrays (one permutation per epoch, one fancy-indexing
  gather per batch) costs microseconds per batch, where shuffling and
  collating example by example cost milliseconds.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples <= 0 or batch_size <= 0:
      raise ValueError(f"need examples and a positive batch size, got {num_examples=} {batch_size=}")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed

  def __len__(self) -> int:
    return sys.maxsize  # endless; the loop decides when to stop

  @functools.lru_cache(maxsize=4)
  def epoch_order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def __getitem__(self, index: int) -> np.ndarray:
    start = index * self.batch_size
    positions = np.arange(start, start + self.batch_size)
    first, last = (start // self.num_examples, (start + self.batch_size - 1) // self.num_examples)
    if first == last:
      return self.epoch_order(first)[positions - first * self.num_examples]
    # The batch straddles epoch boundaries: index into the epochs' orders laid end to end.
    orders = np.concatenate([self.epoch_order(e) for e in range(first, last + 1)])
    return orders[positions - first * self.num_examples]
