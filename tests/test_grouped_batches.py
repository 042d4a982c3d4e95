"""Batches grouped by dataset: one dataset per batch, its index in the batch, one compile per distinct shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.config.schema import DataConfig, MixtureConfig
from jaxtrain.core.compile import ShapeCompiledStep
from jaxtrain.data import grouping, pipeline
from jaxtrain.data.sources import as_source

WIDTHS = {"a": 8, "b": 8, "c": 12}  # three datasets, two distinct shapes


def _grouped():
  sets = [pipeline.TrainSet(name, as_source({"x": np.full((50, width), k, np.float32)}))
          for k, (name, width) in enumerate(WIDTHS.items())]
  cfg = DataConfig(batch_size=16, group_by_dataset=True, mixture=MixtureConfig(weights=[0.5, 0.25, 0.25]))
  return pipeline.train_pipeline(sets, cfg).dataset, sets


def _toy_step(state, batch):
  """A step that accepts any feature width, like a model with per-dataset readout heads."""
  return state + jnp.mean(batch["x"]), {"loss": jnp.mean(batch["x"] * batch["dataset"][:, None])}


def test_every_batch_comes_from_one_dataset_in_proportion_to_its_weight():
  ds, sets = _grouped()
  batches = [ds[i] for i in range(400)]
  chosen = np.array([b["dataset"][0] for b in batches])
  for b in batches:
    k = b["dataset"][0]
    assert (b["dataset"] == k).all() and (b["x"] == k).all()  # rows of that dataset only
    assert b["x"].shape == (16, list(WIDTHS.values())[k])
  frequencies = np.bincount(chosen, minlength=3) / len(chosen)
  assert np.allclose(frequencies, [0.5, 0.25, 0.25], atol=5 * np.sqrt(0.25 / len(chosen)))
  assert grouping.distinct_shapes([grouping.feature_signature(s.train) for s in sets]) == 2


def test_three_datasets_with_two_shapes_compile_twice():
  ds, _ = _grouped()
  step = ShapeCompiledStep(_toy_step, name="toy_step", in_shardings=None, out_shardings=None, donate_state=False)
  state = jnp.zeros(())
  seen = set()
  for i in range(30):
    batch = ds[i]
    seen.add(int(batch["dataset"][0]))
    state, metrics = step(state, jax.device_put(batch))
  assert seen == {0, 1, 2}
  assert step.num_compilations == 2
  assert np.isfinite(float(metrics["loss"]))
