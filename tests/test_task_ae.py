"""Task `ae` on real digits: each latent (none, linear, vq) on flat digits, conv on images and gnn on
point clouds learn in short runs; the embed and reconstruct views; reconstruction errors."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.config.validate import validate
from jaxtrain.data.sources import load_splits
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.autoencoder import AutoencoderTask


def _overrides(run_dir, steps, *extra):
  # Short warmup: these runs are a fraction of the default 2,000 steps. A train row every step: the
  # first is the loss of the untrained model.
  return [f"run.dir={run_dir}", f"trainer.steps={steps}", "trainer.epochs=null", "trainer.log_every=1",
          f"trainer.eval_every={steps}", f"checkpoint.every={steps}", "schedule.warmup_steps=20",
          "logging.progress=none", *extra]


def _train(tmp_path_factory, name, steps, *extra):
  run_dir = tmp_path_factory.mktemp(name) / "run"
  overrides = _overrides(run_dir, steps, *extra)
  return jaxtrain.run(jaxtrain.compose(overrides)), overrides


@pytest.fixture(scope="module")
def flat_runs(tmp_path_factory):
  """The default config (mlp -> latent -> mlp on data=digits) for 150 steps with each latent."""
  return {latent: _train(tmp_path_factory, f"ae_{latent}", 150, f"model/latent={latent}")
          for latent in ("none", "linear", "vq")}


# Bars from measured val mse after 150 steps (8 fake CPU devices): none 0.0186, linear 0.0230,
# vq 0.0484 with perplexity 36 (64 codes; k-means with 64 centres reaches 0.025 on this split).
@pytest.mark.parametrize("latent,bar", [("none", 0.03), ("linear", 0.035), ("vq", 0.065)])
def test_each_latent_learns(flat_runs, latent, bar):
  final = flat_runs[latent][0].summary["final_metrics"]
  assert final["val/mse"] < bar, final
  assert final["val/loss"] >= final["val/mse"] - 1e-7  # the latent's aux loss is added, never subtracted


def test_vq_uses_many_codes(flat_runs):
  final = flat_runs["vq"][0].summary["final_metrics"]
  assert final["val/perplexity"] > 8, final  # measured 36
  assert final["val/codebook_usage"] > 0.3, final  # measured 0.84
  assert final["val/codebook_loss"] > 0 and final["val/commitment_loss"] > 0


def _task_and_batch(overrides, num=16):
  spec = validate(jaxtrain.compose(overrides))
  val = load_splits(spec.config.data).val
  batch = {key: value[:num] for key, value in val.items()}
  return AutoencoderTask(spec.task, batch), batch


def test_embed_and_reconstruct_views(flat_runs):
  result, overrides = flat_runs["vq"]
  task, batch = _task_and_batch(overrides)
  assert task.supports("embed") and task.supports("reconstruct") and not task.supports("sample")
  state = result.state
  z = jax.jit(task.embed)(state.params, state.model_state, batch)
  assert z.shape == (16, 16)
  # VQ codes are codebook rows (plus their restart offsets).
  codebook = state.params["latent"]["codebook"] + state.model_state["vq_state"]["latent"]["offset"]
  nearest = jnp.min(jnp.max(jnp.abs(z[:, None] - codebook[None]), axis=-1), axis=1)
  np.testing.assert_allclose(nearest, 0.0, atol=1e-5)
  reconstruction = jax.jit(task.reconstruct)(state.params, state.model_state, batch, jax.random.PRNGKey(0))
  assert reconstruction.shape == batch["x"].shape
  assert float(jnp.mean(jnp.square(reconstruction - batch["x"]))) < 0.1


def _first_train_value(result, metric):
  """`metric` at step 1: the untrained model on the first batch."""
  with open(result.run_dir / "facts" / "scalars.csv") as f:
    first = next(row for row in csv.DictReader(f) if row["split"] == "train")
  assert first["step"] == "1"
  return float(first[metric])


def test_conv_autoencoder_learns_on_images(tmp_path_factory):
  result, _ = _train(tmp_path_factory, "ae_conv", 100, "data=digits_images", "data.batch_size=128",
                     "model/encoder=conv", "model/decoder=conv")
  final = result.summary["final_metrics"]["val/mse"]
  initial = _first_train_value(result, "mse")
  # Measured: 0.231 at step 1, val 0.050 after 100 steps of batch 128.
  assert final < 0.3 * initial and final < 0.07, (initial, final)


def test_gnn_autoencoder_learns_on_point_clouds(tmp_path_factory):
  result, _ = _train(tmp_path_factory, "ae_gnn", 40, "data=digits_points", "data.batch_size=64",
                     "model/encoder=gnn", "model/decoder=gnn")
  final = result.summary["final_metrics"]
  assert "val/chamfer" in final and "val/mse" not in final
  initial = _first_train_value(result, "chamfer")
  # Measured: 0.90 at step 1, val 0.063 after 40 steps of batch 64.
  assert final["val/chamfer"] < 0.2 * initial and final["val/chamfer"] < 0.12, (initial, final)


def test_chamfer_needs_point_sets():
  with pytest.raises(ConfigError, match=r"task.reconstruction=chamfer needs point sets \[P, F\].*data=digits_points"):
    _task_and_batch(["task.reconstruction=chamfer"])


def test_unknown_reconstruction_lists_the_choices():
  with pytest.raises(ConfigError, match="task.reconstruction='l1'.*auto, mse, chamfer"):
    _task_and_batch(["task.reconstruction=l1"])
