"""Index sampling, per-process sharding of the train stream, padded eval batches and exact eval means."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.build import build
from jaxtrain.config import compose
from jaxtrain.config.schema import DataConfig
from jaxtrain.config.validate import validate
from jaxtrain.data import pipeline
from jaxtrain.data.sampling import ShuffledBatchIndices
from jaxtrain.data.sources import load_splits


def _stream(sampler, num_batches):
  return np.concatenate([sampler[i] for i in range(num_batches)])


@pytest.mark.parametrize("num_examples,batch_size", [(12, 4), (10, 4), (7, 3), (5, 5)])
def test_every_example_once_per_epoch(num_examples, batch_size):
  sampler = ShuffledBatchIndices(num_examples, batch_size, seed=3)
  epochs = 4
  num_batches = -(-epochs * num_examples // batch_size)
  stream = _stream(sampler, num_batches)
  assert all(len(sampler[i]) == batch_size for i in range(num_batches))
  orders = [stream[e * num_examples:(e + 1) * num_examples] for e in range(epochs)]
  for order in orders:
    np.testing.assert_array_equal(np.sort(order), np.arange(num_examples))
  # A new order every epoch.
  assert len({tuple(o) for o in orders}) == epochs


def test_order_is_a_pure_function_of_seed_and_position():
  a, b = ShuffledBatchIndices(100, 8, seed=0), ShuffledBatchIndices(100, 8, seed=0)
  np.testing.assert_array_equal(_stream(a, 40), _stream(b, 40))
  # Random access in any order gives the same batches (what resuming relies on).
  for i in (37, 3, 12, 12, 0):
    np.testing.assert_array_equal(a[i], _stream(b, 40)[i * 8:(i + 1) * 8])
  assert not np.array_equal(_stream(a, 13), _stream(ShuffledBatchIndices(100, 8, seed=1), 13))


def _arrays(n=50):
  return {"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "label": np.arange(n, dtype=np.int32)}


def test_two_processes_get_row_blocks_of_the_global_batch(monkeypatch):
  arrays = _arrays()
  cfg = DataConfig(batch_size=8, shuffle_seed=5)
  one = pipeline.train_dataset(arrays, cfg)
  per_process = []
  for index in range(2):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    per_process.append(pipeline.train_dataset(arrays, cfg))
  monkeypatch.undo()
  for i in range(20):  # several epochs: 50 examples, 8 per global batch
    global_batch = one[i]
    p0, p1 = per_process[0][i], per_process[1][i]
    assert p0["x"].shape == (4, 3) and p1["x"].shape == (4, 3)
    for key in arrays:
      np.testing.assert_array_equal(np.concatenate([p0[key], p1[key]]), global_batch[key])
  with pytest.raises(ValueError, match="not divisible by 2 processes"):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    pipeline.train_dataset(arrays, DataConfig(batch_size=7))


def test_eval_dataset_pads_last_batch_with_zero_weight():
  arrays = _arrays(10)
  ds = pipeline.eval_dataset(arrays, DataConfig(eval_batch_size=4))
  batches = [ds[i] for i in range(len(ds))]
  assert len(batches) == 3
  assert all(b["x"].shape == (4, 3) for b in batches)  # one shape: one compilation
  np.testing.assert_array_equal(np.concatenate([b["weight"] for b in batches]), [1] * 10 + [0, 0])
  real = np.concatenate([b["label"][b["weight"] > 0] for b in batches])
  np.testing.assert_array_equal(real, np.arange(10))
  # Never padded beyond what the split needs, but kept a multiple of the devices.
  small = pipeline.eval_dataset(_arrays(5), DataConfig(eval_batch_size=512), multiple_of=8)
  assert len(small) == 1 and small[0]["x"].shape == (8, 3)
  assert small[0]["weight"].sum() == 5


def test_evaluate_is_the_exact_mean_over_the_split():
  spec = validate(compose.compose(["trainer.steps=5", "trainer.epochs=null", "data.eval_batch_size=64"]))
  engine = build(spec)
  val = load_splits(spec.config.data).val
  n = len(val["x"])
  assert n % 64, "the split should end in a padded batch for this test to mean anything"
  assert any(b["weight"].min() == 0 for b in engine.val_data)

  results = engine.evaluate(engine.state)

  params = jax.device_get(engine.state.params)
  state = engine.state
  reconstruction = jax.jit(engine.task.reconstruct)(params, jax.device_get(state.model_state),
                                                    {"x": jnp.asarray(val["x"])}, jax.random.PRNGKey(0))
  per_example = np.mean((np.asarray(reconstruction, np.float64) - val["x"]) ** 2, axis=1)
  assert set(results) == {"loss", "mse"}
  assert results["mse"] == pytest.approx(per_example.mean(), rel=1e-5)
  assert results["loss"] == pytest.approx(per_example.mean(), rel=1e-5)
  # A mean over padded batches counted as real would be visibly smaller.
  padded_rows = 64 * len(engine.val_data) - n
  assert per_example.mean() * n / (n + padded_rows) < results["mse"] * (1 - 1e-3)


def test_batch_size_must_divide_over_devices():
  from jaxtrain.errors import ConfigError

  message = r"data.batch_size=12 must be divisible by the 8 batch shards of the mesh \(mesh.data x mesh.fsdp\)"
  with pytest.raises(ConfigError, match=message):
    build(validate(compose.compose(["trainer.steps=5", "data.batch_size=12"])))
