"""Snapshots for checkpointing without stopping the loop.

A checkpoint must capture the state of one step, but the next step donates
that state's buffers. Orbax's async save therefore copies every array to host
memory before it returns, and the loop waits for that copy (plus Orbax's own
bookkeeping) at every save. A snapshot instead copies the state on its own
devices: the copy is one compiled program, dispatched like a step, so the loop
goes on at once, and the whole Orbax save runs on a checkpoint thread from the
copy, which nothing donates. The price is one extra copy of the state on the
devices until the save has moved it to host memory; `snapshot_fits` decides
whether there is room for it.

On CPU devices the device memory is the host's, and a copy into newly allocated
memory costs about four times the copy itself (every page is faulted in:
~255 ms against ~67 ms for 1 GB on a 2-core VM), so there `Snapshots` keeps the
copy's buffers between saves and copies into them (donated) the next time.
Accelerators' allocators reuse freed device memory, so there nothing is kept.

The data iterator's position is read at once (it moves with the next batch)
and handed to the thread as a frozen `FrozenIteratorState`.
"""

from __future__ import annotations

import json
from typing import Any

import grain
import jax
import jax.numpy as jnp

SNAPSHOT_MODES = ("auto", "device", "none")

# Share of a device's free memory (its capacity less the peak in use so far)
# that a snapshot may take under `auto`: the rest is headroom for the next
# steps, whose temporaries come back while the snapshot is still alive.
_AUTO_SHARE_OF_FREE = 0.5


def _copy(tree: Any) -> Any:
  # `jnp.copy` is a real copy inside jit: a plain identity would hand back the
  # input buffers, which the next train step donates.
  return jax.tree.map(jnp.copy, tree)


def _layout(tree: Any) -> Any:
  return jax.tree.structure(tree), [(x.shape, x.dtype, x.sharding) for x in jax.tree.leaves(tree)]


class Snapshots:
  """Takes snapshots of a state: copies in new buffers with the same shardings.

  On CPU devices the previous snapshot's buffers are reused (donated to the
  copy). The caller guarantees that the previous snapshot is no longer read
  (its save has finished) before taking the next one.
  """

  def __init__(self):
    self._buffers: Any = None
    self._layout: Any = None
    self._copy: Any = None
    self._copy_into: Any = None

  def prepare(self, tree: Any) -> None:
    """Compiles the copies for `tree`'s layout (arrays or ShapeDtypeStructs with shardings).

    Called before training, so that the first two saves do not compile inside
    the loop; `take` prepares a layout it has not seen.
    """
    layout = _layout(tree)
    if layout == self._layout:
      return
    shardings = jax.tree.map(lambda x: x.sharding, tree)
    self._copy = jax.jit(_copy, out_shardings=shardings).lower(tree).compile()
    # `keep_unused` keeps the otherwise unread buffers as an argument, so that
    # XLA can write the copy into them.
    self._copy_into = jax.jit(lambda buffers, tree: _copy(tree), out_shardings=shardings, donate_argnums=0,
                              keep_unused=True).lower(tree, tree).compile()
    self._layout, self._buffers = layout, None

  def take(self, tree: Any) -> Any:
    """A copy of `tree` in buffers that no train step donates."""
    self.prepare(tree)
    snapshot = self._copy(tree) if self._buffers is None else self._copy_into(self._buffers, tree)
    on_host = all(device.platform == "cpu" for device in state_bytes_per_device(tree))
    self._buffers = snapshot if on_host else None
    return snapshot

  def release(self) -> None:
    """Drops the kept buffers (their memory returns once no save reads them)."""
    self._buffers = None


class FrozenIteratorState:
  """A data iterator's position captured now, saved later by Grain's checkpoint handler.

  Grain's handler writes `get_state()` of anything that is not a
  `grain.DatasetIterator` as bytes, which restores into a DatasetIterator the
  same way as its own JSON.
  """

  def __init__(self, iterator: Any):
    state = iterator.get_state()
    self._state = json.dumps(state, indent=4).encode() if isinstance(iterator, grain.DatasetIterator) else state

  def get_state(self) -> bytes:
    return self._state


def state_bytes_per_device(tree: Any) -> dict[jax.Device, int]:
  """Bytes each local device holds of `tree` (its addressable shards)."""
  held: dict[jax.Device, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in getattr(leaf, "addressable_shards", ()):
      held[shard.device] = held.get(shard.device, 0) + shard.data.size * shard.data.dtype.itemsize
  return held


def snapshot_fits(tree: Any) -> bool:
  """Whether every device has room for a copy of its part of `tree`.

  Devices without memory statistics (CPU, whose "device memory" is the host's)
  count as having room: the host copy Orbax would make costs the same.
  """
  for device, nbytes in state_bytes_per_device(tree).items():
    try:
      stats = device.memory_stats()
    except Exception:  # backends without memory statistics
      stats = None
    if not stats or "bytes_limit" not in stats:
      continue
    used = max(stats.get("peak_bytes_in_use", 0), stats.get("bytes_in_use", 0))
    if nbytes > _AUTO_SHARE_OF_FREE * (stats["bytes_limit"] - used):
      return False
  return True


def use_snapshots(mode: str, tree: Any) -> bool:
  """Whether saves of `tree` go through snapshots, for `checkpoint.snapshot=mode`.

  Only in single-process runs: with several processes Orbax's save meets the
  other processes at barriers, which stay on the thread that trains.
  """
  if mode == "none" or jax.process_count() > 1:
    return False
  return mode == "device" or snapshot_fits(tree)
