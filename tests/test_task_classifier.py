"""Task `classifier`: the default config's accuracy and recall@K on digits, the embed view,
padding-proof loss, and one-line errors for labels or options that do not fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.config.validate import validate
from jaxtrain.data.sources import load_splits
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.classifier import ClassifierTask


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
  """`task=classifier` exactly as shipped (600 steps), quiet, in a temporary run directory."""
  run_dir = tmp_path_factory.mktemp("classifier") / "run"
  # log_every=10 only changes how often the host reads metrics; reading them often keeps few
  # steps queued, which 8 fake devices sharing 2 cores need (a deep queue can stall XLA:CPU collectives).
  return jaxtrain.run(jaxtrain.compose(["task=classifier", f"run.dir={run_dir}", "logging.progress=none",
                                        "trainer.log_every=10"]))


def test_default_config_reaches_its_accuracy(default_run):
  metrics = default_run.summary["final_metrics"]
  assert default_run.summary["final_step"] == 600
  assert metrics["val/accuracy"] >= 0.97
  assert metrics["val/top3_accuracy"] >= metrics["val/accuracy"]


def test_recall_at_k_is_high_after_training(default_run):
  metrics = default_run.summary["final_metrics"]
  assert metrics["val/recall@1"] > 0.9
  assert metrics["val/recall@5"] >= metrics["val/recall@1"]


def _task(*overrides):
  spec = validate(jaxtrain.compose(["task=classifier", *overrides]))
  train = load_splits(spec.config.data).train
  return ClassifierTask(spec.task, {k: v[:32] for k, v in train.items()})


def test_embed_view_and_padding_proof_loss(default_run):
  task = _task()
  state = jax.device_get(default_run.state)
  x = jnp.asarray(task.example_batch["x"][:4])
  labels = jnp.asarray(task.example_batch["label"][:4])
  assert task.supports("embed") and not task.supports("reconstruct")
  assert jax.jit(task.embed)(state.params, state.model_state, {"x": x}).shape == (4, 32)
  real = {"x": x[:2], "label": labels[:2]}
  # Padding rows (weight 0) with garbage labels change neither the loss nor the metrics.
  padded = {"x": x, "label": labels.at[2:].set(7), "weight": jnp.array([1.0, 1.0, 0.0, 0.0])}
  loss = jax.jit(task.loss, static_argnums=4)  # one compile per shape instead of many eager ops
  loss_real, (metrics_real, _) = loss(state.params, state.model_state, real, jax.random.PRNGKey(0), False)
  loss_padded, (metrics_padded, _) = loss(state.params, state.model_state, padded, jax.random.PRNGKey(0), False)
  np.testing.assert_allclose(loss_padded, loss_real, rtol=1e-6)
  assert set(metrics_real) == {"accuracy", "top3_accuracy"}
  for name in metrics_real:
    np.testing.assert_allclose(metrics_padded[name], metrics_real[name], rtol=1e-6)


@pytest.mark.parametrize("override, message", [
    ("task.num_classes=5", r"task.num_classes=5: the data has label \d; labels must lie in \[0, 5\)"),
    ("task.top_k=11", r"task.top_k=11: must be between 1 and task.num_classes=10"),
    ("task.label_key=digit", r"task.label_key='digit': the data has no such key"),
])
def test_bad_options_are_one_line_config_errors(override, message):
  with pytest.raises(ConfigError, match=message) as err:
    _task(override)
  assert "\n" not in str(err.value)
