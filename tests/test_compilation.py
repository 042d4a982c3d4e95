"""Exactly one compilation of the train step per distinct batch shape; a recompilation is a warning."""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxtrain.core.compile import ShapeCompiledStep, shape_signature

from _helpers import read_summary

# What jax 0.10 logs under jax.log_compiles (logger jax._src.interpreters.pxla):
#   "Compiling jit(train_step) with global shapes and types (...)", and jit(train_steps)
#   for the step scanned over trainer.steps_per_call batches.
TRAIN_STEP_COMPILE = re.compile(r"^Compiling jit\(train_steps?\)")


def test_full_run_compiles_train_step_once(reference_run):
  summary = read_summary(reference_run.run_dir)
  assert summary["train_step_compilations"] == 1
  assert summary["compile_seconds"] > 0
  # Independently of the framework's own counter: what XLA was asked to compile. Forty
  # steps at ten per call, every action on a multiple of ten: only the ten-step call.
  compiles = [m for m in reference_run.jax_log if TRAIN_STEP_COMPILE.search(m)]
  assert len(compiles) == 1 and compiles[0].startswith("Compiling jit(train_steps)"), compiles
  # The eval step was compiled too (and once: every eval batch has the same shape).
  assert len([m for m in reference_run.jax_log if m.startswith("Compiling jit(eval_step)")]) == 1


def test_a_run_traces_each_step_once(reference_run):
  # Tracing is most of a warm start's build: the trace that reads the steps' metric names
  # is the one their compiles lower.
  traces = [m for m in reference_run.jax_log if m.startswith("Finished tracing")]
  for step in ("train_step", "train_steps", "eval_step"):
    assert len([m for m in traces if m.startswith(f"Finished tracing {step} ")]) == 1, traces


def _step(state, batch):
  new_state = state + jnp.sum(batch["x"])
  return new_state, {"mean": jnp.mean(batch["x"])}


def test_new_batch_shape_compiles_again_with_a_warning(caplog):
  device = SingleDeviceSharding(jax.devices()[0])
  step = ShapeCompiledStep(_step, name="toy_step", in_shardings=(device, {"x": device}),
                           out_shardings=(device, device), donate_state=False)
  state = jnp.zeros((), jnp.float32)
  small = {"x": jnp.ones((8, 3), jnp.float32)}
  large = {"x": jnp.ones((16, 3), jnp.float32)}

  with caplog.at_level(logging.WARNING, logger="jaxtrain.core.compile"):
    state, _ = step(state, small)
    state, _ = step(state, small)
    assert step.num_compilations == 1
    assert not caplog.records
    state, metrics = step(state, large)
    assert step.num_compilations == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "toy_step compiled again" in warnings[0].getMessage()
    # Going back to a shape already seen reuses its executable, silently.
    state, _ = step(state, small)
    assert step.num_compilations == 2
    assert len(caplog.records) == 1
  np.testing.assert_allclose(float(state), 8 * 3 + 8 * 3 + 16 * 3 + 8 * 3)
  assert float(metrics["mean"]) == 1.0
  assert step.compile_seconds > 0


def test_shape_signature_tracks_shape_and_dtype():
  a = {"x": np.zeros((4, 2), np.float32)}
  assert shape_signature(a) == shape_signature({"x": np.ones((4, 2), np.float32)})
  assert shape_signature(a) != shape_signature({"x": np.zeros((4, 3), np.float32)})
  assert shape_signature(a) != shape_signature({"x": np.zeros((4, 2), np.int32)})
