"""Snapshot saves: the loop goes on while a checkpoint thread saves a copy of the state."""

import functools
import types

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain import snapshot
from jaxtrain.checkpoint import Checkpointer, abstract_with_shardings
from jaxtrain.config.schema import CheckpointConfig
from jaxtrain.errors import ConfigError


def _config(mode="device", **kwargs):
  return CheckpointConfig(every=1, keep=3, monitor=None, async_save=True, snapshot=mode, **kwargs)


def _iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


def _state(value):
  sharding = jax.sharding.NamedSharding(
      jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)), jax.sharding.PartitionSpec("data"))
  return {"w": jax.device_put(jnp.full((64, 4), value, jnp.float32), sharding), "step": jnp.asarray(int(value))}


@functools.partial(jax.jit, donate_argnums=0)
def _donated_update(state):
  """Like a train step: the input buffers are donated and may be overwritten."""
  return {"w": state["w"] * 10.0 + 1.0, "step": state["step"] + 1}


def _restore(ckpt, step, like):
  abstract = abstract_with_shardings(jax.eval_shape(lambda: like), jax.tree.map(lambda x: x.sharding, like))
  it = _iterator()
  state, meta = ckpt.restore(step, abstract, it)
  return state, meta, it


def test_saved_state_and_position_are_those_of_the_save_call_although_the_loop_goes_on(tmp_path):
  ckpt = Checkpointer(tmp_path / "ckpt", _config())
  it = _iterator()
  for _ in range(5):
    next(it)
  state = _state(3.0)
  assert ckpt.save(3, state, it, {"step": 3})
  # The loop moves on at once: the state is donated, the iterator advances.
  later = _donated_update(state)
  for _ in range(7):
    next(it)
  ckpt.wait()
  restored, meta, restored_it = _restore(ckpt, 3, later)
  chex.assert_trees_all_equal(restored, {"w": np.full((64, 4), 3.0, np.float32), "step": 3})
  assert meta == {"step": 3}
  assert next(restored_it) == 5  # the position at the save call, not the iterator's current one
  assert restored["w"].sharding == later["w"].sharding
  ckpt.close()


def test_a_step_already_saved_is_not_saved_again_and_later_steps_are(tmp_path):
  ckpt = Checkpointer(tmp_path / "ckpt", _config())
  it = _iterator()
  assert ckpt.save(1, _state(1.0), it, {})
  assert not ckpt.save(1, _state(9.0), it, {})
  assert ckpt.save(2, _state(2.0), it, {})
  ckpt.close()
  reopened = Checkpointer(tmp_path / "ckpt", _config())
  assert reopened.all_steps() == [1, 2]
  assert not reopened.save(2, _state(9.0), it, {})  # read from disk at the first save
  restored, _, _ = _restore(reopened, 1, _state(0.0))
  assert float(restored["w"][0, 0]) == 1.0
  reopened.close()


def test_an_error_on_the_checkpoint_thread_reaches_the_caller(tmp_path, monkeypatch):
  ckpt = Checkpointer(tmp_path / "ckpt", _config())

  def broken_save(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(ckpt.manager, "save", broken_save)
  assert ckpt.save(1, _state(1.0), _iterator(), {})  # queued: the error comes later
  with pytest.raises(OSError, match="disk full"):
    ckpt.wait()
  ckpt.close()


def test_snapshot_none_saves_through_orbax_on_the_calling_thread(tmp_path):
  ckpt = Checkpointer(tmp_path / "ckpt", _config("none"))
  assert ckpt.save(1, _state(1.0), _iterator(), {})
  assert ckpt._thread is None
  ckpt.close()
  assert Checkpointer(tmp_path / "ckpt", _config("none"), read_only=True).all_steps() == [1]


def test_copy_on_device_makes_new_buffers_with_the_same_shardings():
  state = _state(2.0)
  copy = snapshot.copy_on_device(state)
  assert copy["w"].sharding == state["w"].sharding
  for a, b in zip(state["w"].addressable_shards, copy["w"].addressable_shards):
    assert a.data.unsafe_buffer_pointer() != b.data.unsafe_buffer_pointer()
  chex.assert_trees_all_equal(copy, state)


class _Device:
  """A device that reports its memory like a GPU does."""

  def __init__(self, limit, peak):
    self.stats = {"bytes_limit": limit, "peak_bytes_in_use": peak, "bytes_in_use": peak // 2}

  def memory_stats(self):
    return self.stats


def test_auto_snapshots_only_where_the_copy_fits_and_in_one_process(monkeypatch):
  state = _state(1.0)
  assert snapshot.use_snapshots("auto", state)  # CPU: no memory statistics, the host holds both copies
  assert not snapshot.use_snapshots("none", state)

  roomy, full = _Device(limit=10_000, peak=1_000), _Device(limit=10_000, peak=9_000)
  monkeypatch.setattr(snapshot, "state_bytes_per_device", lambda tree: {roomy: 2_000})
  assert snapshot.use_snapshots("auto", state)
  monkeypatch.setattr(snapshot, "state_bytes_per_device", lambda tree: {roomy: 2_000, full: 2_000})
  assert not snapshot.use_snapshots("auto", state)
  assert snapshot.use_snapshots("device", state)  # asked for explicitly

  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert not snapshot.use_snapshots("device", state)


def test_state_bytes_per_device_counts_each_devices_shards():
  held = snapshot.state_bytes_per_device(_state(1.0))
  assert len(held) == 8
  # 64x4 float32 split over 8 devices, plus the replicated-on-one-device int32 step.
  assert sorted(held.values())[:7] == [64 * 4 * 4 // 8] * 7
  assert sum(held.values()) == 64 * 4 * 4 + 4


def test_bad_snapshot_mode_is_one_config_error():
  with pytest.raises(ConfigError, match=r"checkpoint.snapshot='sometimes': choose one of: auto, device, none"):
    jaxtrain.compose(["checkpoint.snapshot=sometimes"])
