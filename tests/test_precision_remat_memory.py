"""trainer.precision=bf16, model.remat and the compiled step's memory report."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.build import build
from jaxtrain.config import compose
from jaxtrain.config.validate import validate
from jaxtrain.core import memory as memory_lib
from jaxtrain.errors import ConfigError

QUICK = ["trainer.epochs=null", "logging.progress=none", "logging.save_artifacts=false"]


def _engine(*overrides):
  return build(validate(compose.compose(["trainer.steps=10", "trainer.epochs=null", *overrides])))


def _first_batch(engine):
  return engine.put_batch(engine.train_data[0])


def test_bf16_computes_in_bf16_and_keeps_float32_state():
  engine = _engine("trainer.precision=bf16")
  batch = _first_batch(engine)
  hlo = engine.train_step.compile(engine.state, batch).as_text()  # the optimised program
  assert "bf16" in hlo and "dot(" in hlo
  state, metrics = engine.train_step(engine.state, batch)
  dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32


@pytest.fixture(scope="module")
def bf16_and_fp32_runs():
  return {precision: jaxtrain.run(jaxtrain.compose([*QUICK, "trainer.steps=200", "trainer.eval_every=200",
                                                    f"trainer.precision={precision}"]))
          for precision in ("fp32", "bf16")}


def test_bf16_reaches_fp32_validation_loss(bf16_and_fp32_runs):
  fp32 = bf16_and_fp32_runs["fp32"].summary["final_metrics"]["val/loss"]
  bf16 = bf16_and_fp32_runs["bf16"].summary["final_metrics"]["val/loss"]
  assert bf16 <= 1.05 * fp32, (bf16, fp32)
  assert bf16 != fp32  # it really ran in another precision


def test_remat_recomputes_but_gives_the_same_gradients():
  engine = _engine()
  task, state = engine.task, engine.state
  batch = jax.device_get(engine.train_data[0])
  rng = jax.random.PRNGKey(0)

  def grads(policy):
    task.remat = policy
    loss = task.step_loss(train=True)
    fn = lambda p: loss(p, state.model_state, batch, rng, True)[0]
    return jax.make_jaxpr(jax.grad(fn))(state.params), jax.jit(jax.grad(fn))(state.params)

  plain_jaxpr, plain = grads("none")
  for policy in ("full", "dots"):
    jaxpr, rematted = grads(policy)
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)
    assert "checkpoint" not in str(plain_jaxpr) and "remat" not in str(plain_jaxpr)
    chex.assert_trees_all_close(rematted, plain, atol=1e-6, rtol=1e-6)
  task.remat = "none"


def test_step_memory_is_reported_and_checked(monkeypatch):
  engine = _engine()
  executable = engine.train_step.compile(engine.state, _first_batch(engine))
  report = memory_lib.step_memory(executable)
  param_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(jax.device_get(engine.state.params)))
  assert report.argument_bytes >= param_bytes and report.total_bytes > report.argument_bytes
  assert report.fits and "MiB per device" in report.describe()
  # A device too small for the step stops the run before its first step.
  monkeypatch.setattr(memory_lib, "device_capacity", lambda device: 1024)
  with pytest.raises(ConfigError, match="MiB per device.*of 0 MiB"):
    jaxtrain.run(jaxtrain.compose([*QUICK, "trainer.steps=5"]))


@pytest.mark.parametrize("override,message", [("trainer.precision=fp16", "trainer.precision='fp16'"),
                                              ("model.remat=some", "model.remat='some'"),
                                              ("mesh.optimizer=zero3", "mesh.optimizer='zero3'"),
                                              ("mesh.rules=[[a]]", "mesh.rules")])
def test_bad_precision_remat_and_rules_are_one_line_errors(override, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
    validate(compose.compose([override]))
