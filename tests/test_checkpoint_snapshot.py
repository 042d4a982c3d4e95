"""Snapshot saves: the loop goes on while a checkpoint thread saves a copy of the state."""

import functools

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
  """A state on one mesh, as a TrainState is: split params and a replicated step counter."""
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return {"w": jax.device_put(jnp.full((64, 4), value, jnp.float32), split),
          "step": jax.device_put(jnp.asarray(int(value)), replicated)}


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


def test_a_snapshot_is_a_copy_in_new_buffers_with_the_same_shardings():
  state = _state(2.0)
  copy = snapshot.Snapshots().take(state)
  for key in state:
    assert copy[key].sharding == state[key].sharding
    for a, b in zip(state[key].addressable_shards, copy[key].addressable_shards):
      assert a.data.unsafe_buffer_pointer() != b.data.unsafe_buffer_pointer()
  chex.assert_trees_all_equal(copy, state)


def test_prepared_copies_are_compiled_before_the_first_snapshot(monkeypatch):
  """A run prepares its snapshots before the loop's clock starts: taking one then compiles nothing."""
  state = _state(3.0)
  abstract = abstract_with_shardings(jax.eval_shape(lambda: state), jax.tree.map(lambda x: x.sharding, state))
  snapshots = snapshot.Snapshots()
  snapshots.prepare(abstract)
  compiled = (snapshots._copy, snapshots._copy_into)
  assert all(isinstance(fn, jax.stages.Compiled) for fn in compiled)
  monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("a prepared snapshot compiled again"))
  first = snapshots.take(state)
  chex.assert_trees_all_equal(first, state)
  second = snapshots.take(_donated_update(_state(3.0)))  # the second copy goes into the first's buffers
  assert float(second["w"][0, 0]) == 31.0 and (snapshots._copy, snapshots._copy_into) == compiled


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
  # 64x4 float32 split over 8 devices, plus the int32 step replicated on each.
  assert set(held.values()) == {64 * 4 * 4 // 8 + 4}


def test_bad_snapshot_mode_is_one_config_error():
  with pytest.raises(ConfigError, match=r"checkpoint.snapshot='sometimes': choose one of: auto, device, none"):
    jaxtrain.compose(["checkpoint.snapshot=sometimes"])


def test_cpu_snapshots_reuse_their_buffers_and_accelerator_ones_do_not(monkeypatch):
  snapshots = snapshot.Snapshots()
  first = snapshots.take(_state(1.0))
  pointers = [s.data.unsafe_buffer_pointer() for s in first["w"].addressable_shards]
  second = snapshots.take(_state(2.0))  # written into the first snapshot's (donated) buffers
  assert [s.data.unsafe_buffer_pointer() for s in second["w"].addressable_shards] == pointers
  assert first["w"].is_deleted() and float(second["w"][0, 0]) == 2.0
  snapshots.release()
  third = snapshots.take(_state(3.0))
  assert not second["w"].is_deleted() and float(third["w"][0, 0]) == 3.0

  # Devices that are not the host's memory keep nothing between saves.
  gpu = _Device(limit=10_000, peak=0)
  gpu.platform = "gpu"
  monkeypatch.setattr(snapshot, "state_bytes_per_device", lambda tree: {gpu: 1})
  kept = snapshot.Snapshots()
  a = kept.take(_state(4.0))
  b = kept.take(_state(5.0))
  assert not a["w"].is_deleted() and float(b["w"][0, 0]) == 5.0
