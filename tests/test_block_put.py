"""Train batches put on the devices in blocks: the same batches, layout and iterator states as one by one."""

from __future__ import annotations

import grain
import jax
import numpy as np
import pytest

import jaxtrain
from jaxtrain.core import mesh as mesh_lib
from jaxtrain.data import block_put
from jaxtrain.errors import ConfigError

from _helpers import short_overrides

ROWS, BATCH = 50, 8


def _host_batches() -> grain.IterDataset:
  """Shuffled batches of a small table, with an odd tail so the last block is short."""
  rng = np.random.default_rng(0)
  table = {"x": rng.normal(size=(ROWS, 3)).astype(np.float32), "y": np.arange(ROWS, dtype=np.int32)}
  ds = grain.MapDataset.source(np.arange(ROWS)).shuffle(seed=1)
  ds = ds.map(lambda i: {k: v[i] for k, v in table.items()})
  return ds.to_iter_dataset().batch(BATCH, drop_remainder=False)


def _iterators(length: int):
  # Two devices, so that the 2-row tail batch splits evenly too.
  sharding = mesh_lib.batch_sharding(mesh_lib.make_mesh(devices=jax.devices()[:2]))
  one_by_one = _host_batches().map(lambda b: jax.device_put(b, sharding))
  example = next(iter(_host_batches()))
  blocks = block_put.BlockPutIterDataset(_host_batches(), block_put.BlockPut(sharding, example, length), length)
  return iter(one_by_one), iter(blocks), sharding


def _assert_same_batch(a, b, sharding):
  for key in a:
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    assert b[key].sharding == sharding


@pytest.mark.parametrize("length", [1, 3, 8])
def test_blocks_hand_out_the_same_batches_and_states(length):
  plain, blocked, sharding = _iterators(length)
  # 50 rows in batches of 8: six full batches, then one of 2 rows (the last block is short
  # and holds a batch of another shape, which compiles its own split).
  for _ in range(7):
    assert blocked.get_state() == plain.get_state()
    _assert_same_batch(next(plain), next(blocked), sharding)
  with pytest.raises(StopIteration):
    next(blocked)


def test_a_state_taken_mid_block_resumes_at_the_next_unconsumed_batch():
  plain, blocked, sharding = _iterators(4)
  for _ in range(2):  # halfway through the first block
    next(plain), next(blocked)
  state = blocked.get_state()
  expected = [next(plain) for _ in range(3)]

  _, resumed, _ = _iterators(4)
  resumed.set_state(state)
  for want in expected:
    _assert_same_batch(want, next(resumed), sharding)
  # set_state also drops what an iterator had already read ahead.
  blocked.set_state(state)
  _assert_same_batch(expected[0], next(blocked), sharding)


def test_a_block_holds_at_most_its_byte_budget():
  small = {"x": np.zeros((64, 16), np.float32)}  # 4 KB
  big = {"x": np.zeros((1024, 1024), np.float32)}  # 4 MB
  assert block_put.block_length(small, 8) == 8
  assert block_put.block_length(big, 8) == block_put.MAX_BLOCK_BYTES // (4 * 2**20)
  assert block_put.block_length({"x": np.zeros((4096, 1024), np.float32)}, 8) == 1


def test_blocks_apply_only_where_batches_are_put_in_the_loop_thread_one_shape_no_mining():
  assert block_put.blocks_apply(8, device_prefetch=0, grouped=False, mined=False)
  assert not block_put.blocks_apply(1, device_prefetch=0, grouped=False, mined=False)
  assert not block_put.blocks_apply(8, device_prefetch=2, grouped=False, mined=False)
  assert not block_put.blocks_apply(8, device_prefetch=0, grouped=True, mined=False)
  assert not block_put.blocks_apply(8, device_prefetch=0, grouped=False, mined=True)


def test_blocks_train_to_the_same_params_as_one_batch_per_transfer(tmp_path, monkeypatch):
  # 30 steps with a checkpoint every 20: blocks of 8 end at 24 and 32, so the run
  # saves and ends mid-block.
  block_sizes = []
  put = block_put.BlockPut.__call__
  monkeypatch.setattr(block_put.BlockPut, "__call__", lambda self, batches: block_sizes.append(len(batches))
                      or put(self, batches))

  def fingerprint(name: str, *extra: str) -> str:
    overrides = short_overrides(tmp_path / name, 30, "trainer.eval_every=1000", *extra)
    return jaxtrain.run(jaxtrain.compose(overrides)).params_fingerprint

  one_by_one = fingerprint("one_by_one", "data.put_block=1")
  assert not block_sizes
  assert fingerprint("blocks", "data.put_block=8") == one_by_one
  assert block_sizes == [8] * 4  # the default digits run puts its batches in blocks


def test_a_put_block_below_one_is_a_config_error():
  with pytest.raises(ConfigError, match="data.put_block"):
    jaxtrain.run(jaxtrain.compose(["data.put_block=0"]))
