"""Best/last retention: the newest checkpoint is never deleted, the best one is kept."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.checkpoint import Checkpointer, abstract_with_shardings
from jaxtrain.config.schema import CheckpointConfig

from _helpers import checkpoint_steps, events_named, read_summary, reference_overrides


def _best_by_events(run_dir, mode):
  values = {e["step"]: e["metrics"]["val/loss"] for e in events_named(run_dir, "on_checkpoint")}
  pick = min if mode == "min" else max
  return pick(values, key=values.get), values


def test_keep_one_mode_min_keeps_newest_and_best(reference_run):
  run_dir = reference_run.run_dir
  summary = read_summary(run_dir)
  best, values = _best_by_events(run_dir, "min")
  assert sorted(values) == [10, 20, 30, 40]
  assert summary["best_step"] == best
  assert summary["best_metrics"]["val/loss"] == pytest.approx(values[best])
  assert checkpoint_steps(run_dir) == {40, best}


def test_keep_one_mode_max_keeps_newest_and_best(tmp_path):
  run_dir = tmp_path / "run"
  overrides = [o for o in reference_overrides(run_dir) if not o.startswith("checkpoint.mode")]
  jaxtrain.run(jaxtrain.compose(overrides + ["checkpoint.mode=max"]))
  summary = read_summary(run_dir)
  best, values = _best_by_events(run_dir, "max")
  # Training lowers the loss, so the "best" by max is an early checkpoint, not the newest.
  assert best != 40
  assert summary["best_step"] == best
  assert summary["best_metrics"]["val/loss"] == pytest.approx(max(values.values()))
  assert checkpoint_steps(run_dir) == {best, 40}


# -- Checkpointer on its own: a dummy state and a Grain iterator ------------------


def _iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


def _save_sequence(directory, values, mode, keep=1):
  cfg = CheckpointConfig(every=1, keep=keep, monitor="val/loss", mode=mode, async_save=True)
  ckpt = Checkpointer(directory, cfg)
  it = _iterator()
  for step, value in enumerate(values, start=1):
    next(it)
    state = {"w": jnp.full((4,), float(step)), "step": jnp.asarray(step)}
    ckpt.save(step, state, it, {"step": step, "value": value}, metrics={"val/loss": value})
  ckpt.wait()
  ckpt.close()
  return cfg


@pytest.mark.parametrize("mode,values,keep,expected", [
    ("min", [3.0, 1.0, 2.0, 4.0, 5.0], 1, {2, 5}),
    ("max", [3.0, 1.0, 5.0, 2.0, 0.0], 1, {3, 5}),
    ("min", [3.0, 1.0, 2.0, 4.0, 5.0], 2, {2, 4, 5}),
    ("min", [5.0, 4.0, 3.0, 2.0, 1.0], 1, {5}),  # best is the newest: one checkpoint
])
def test_checkpointer_retention(tmp_path, mode, values, keep, expected):
  _save_sequence(tmp_path / "ckpt", values, mode, keep)
  on_disk = {int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()}
  assert on_disk == expected


def test_checkpointer_restores_state_iterator_and_meta(tmp_path):
  cfg = _save_sequence(tmp_path / "ckpt", [3.0, 1.0, 2.0], "min")
  reader = Checkpointer(tmp_path / "ckpt", cfg, read_only=True)
  assert reader.latest_step() == 3
  assert sorted(reader.all_steps()) == [2, 3]
  template = {"w": jnp.zeros((4,)), "step": jnp.asarray(0)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = abstract_with_shardings(jax.eval_shape(lambda: template), jax.tree.map(lambda _: sharding, template))
  it = _iterator()
  state, meta = reader.restore(3, abstract, it)
  reader.close()
  np.testing.assert_array_equal(state["w"], np.full((4,), 3.0))
  assert int(state["step"]) == 3
  assert meta == {"step": 3, "value": 2.0}
  assert next(it) == 3  # three elements were consumed before the save
