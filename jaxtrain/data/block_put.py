"""Several train batches put on the devices with one transfer.

A host-to-device transfer has a fixed host cost that a small batch does not
amortise, and on few cores that host time is taken from the device's compute. On
the 2-core CPU VM of BENCHMARKS.md (the default digits batch is 64 KB, a step
~3.3 ms) the loop's thread spent ~610 µs per step handing out batches put one by
one, and ~280 µs with blocks of 8 (`benchmarks/loop_breakdown.py`).
`BlockPutIterDataset` stacks `length` consecutive host batches, puts the stack
once and splits it on the devices with one compiled call.

Its iterator state is always its parent's state before the next batch it hands
out: the same state as without blocks, so checkpoints are interchangeable and a
resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Callable

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# A block holds at most this many bytes of batches: past a few MB a transfer's fixed
# cost is small next to the copy, and a block of large batches would only hold memory.
MAX_BLOCK_BYTES = 8 * 2**20


def block_length(batch: Any, max_batches: int) -> int:
  """Batches per transfer for batches like `batch`: at most `max_batches` and MAX_BLOCK_BYTES."""
  nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(batch))
  return max(1, min(max_batches, MAX_BLOCK_BYTES // max(nbytes, 1)))


class BlockPut:
  """`[host batch] * k -> [device batch] * k`: one transfer of the stack, one compiled split.

  Device batches are laid out by `sharding` (the step's batch sharding); the stack is
  the same layout with a leading, unsharded block axis.
  """

  def __init__(self, sharding: NamedSharding, example: Any, length: int):
    self._stack_sharding = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    self._sharding = sharding
    self._splits: dict[tuple, Callable[[Any], list]] = {}  # (length, batch signature) -> split
    # Compiled now, before the loop's clock starts (every full block has this length).
    self._split(length, _signature(example), example)

  def _split(self, length: int, signature: tuple, example: Any) -> Callable[[Any], list]:
    split = self._splits.get((length, signature))
    if split is None:
      def unstack(stack):
        return [jax.tree.map(lambda x: x[i], stack) for i in range(length)]

      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct((length, *np.shape(x)), np.asarray(x).dtype,
                                                             sharding=self._stack_sharding), example)
      split = jax.jit(unstack, out_shardings=self._sharding).lower(abstract).compile()
      self._splits[(length, signature)] = split
    return split

  def __call__(self, batches: list) -> list:
    out = []
    # A short last batch cannot stack with full ones: each run of one shape is its own transfer.
    for signature, run in itertools.groupby(batches, key=_signature):
      run = list(run)
      stack = jax.tree.map(lambda *rows: np.stack(rows), *run)
      out.extend(self._split(len(run), signature, run[0])(jax.device_put(stack, self._stack_sharding)))
    return out


def _signature(batch: Any) -> tuple:
  return tuple((np.shape(x), np.asarray(x).dtype.str) for x in jax.tree.leaves(batch))


class BlockPutIterDataset(grain.IterDataset):
  """Host batches in, device batches out, `length` per transfer (see the module docstring)."""

  def __init__(self, parent: grain.IterDataset, put: BlockPut, length: int):
    super().__init__(parent)
    self._put, self._length = put, length

  def __iter__(self) -> grain.DatasetIterator:
    return _BlockPutIterator(self._parent.__iter__(), self._put, self._length)


class _BlockPutIterator(grain.DatasetIterator):

  def __init__(self, parent: grain.DatasetIterator, put: BlockPut, length: int):
    super().__init__(parent)
    self._put, self._length = put, length
    self._ready: collections.deque = collections.deque()  # (parent state before it, device batch)

  def __next__(self) -> Any:
    if not self._ready:
      states, batches = [], []
      for _ in range(self._length):
        state = self._parent.get_state()
        try:
          batches.append(next(self._parent))
        except StopIteration:
          break
        states.append(state)
      if not batches:
        raise StopIteration
      self._ready.extend(zip(states, self._put(batches)))
    return self._ready.popleft()[1]

  def get_state(self) -> Any:
    return self._ready[0][0] if self._ready else self._parent.get_state()

  def set_state(self, state: Any) -> None:
    self._ready.clear()  # batches read ahead from the old position
    self._parent.set_state(state)


def blocks_apply(put_block: int, device_prefetch: int, grouped: bool, mined: bool) -> bool:
  """Whether train batches go over in blocks: asked for (data.put_block > 1), one process
  (several assemble global arrays batch by batch), put in the loop's thread (a prefetch
  thread already hides the transfer), batches of one shape (not data.group_by_dataset),
  and no hard-example mining (whose table must see losses before the next batches are drawn)."""
  return put_block > 1 and jax.process_count() == 1 and device_prefetch == 0 and not grouped and not mined
