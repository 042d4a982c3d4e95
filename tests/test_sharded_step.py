"""A train step sharded over the mesh equals the same step on one device."""

import chex
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxtrain.build import build
from jaxtrain.config import compose
from jaxtrain.config.validate import validate

# SGD with momentum and a constant lr: the update is linear in the gradient, so
# the comparison is not dominated by Adam's g/|g| at the first step.
BASE = ["trainer.steps=10", "trainer.epochs=null", "optim=sgd", "optim.lr=0.1", "schedule=constant",
        "logging.progress=none"]
NUM_STEPS = 2


def _engine(mesh_overrides):
  return build(validate(compose.compose(BASE + mesh_overrides)))


def _single_device_reference(engine, host_batches):
  """The same steps on one device, from the same initial state."""
  device = jax.devices()[0]
  state = jax.device_put(jax.device_get(engine.state), device)
  step = jax.jit(engine.task.train_step())
  metrics = []
  for batch in host_batches:
    state, m = step(state, jax.device_put(batch, device))
    metrics.append(m)
  return jax.device_get(state), jax.device_get(metrics)


def _sharded(engine, host_batches):
  state = engine.state
  metrics = []
  for batch in host_batches:
    state, m = engine.train_step(state, engine.put_batch(batch))
    metrics.append(m)
  return state, jax.device_get(metrics)


def _check_matches_single_device(engine):
  host_batches = [engine.train_data[i] for i in range(NUM_STEPS)]
  # The reference first: the sharded step donates (deletes) engine.state.
  ref_state, ref_metrics = _single_device_reference(engine, host_batches)
  state, metrics = _sharded(engine, host_batches)
  assert int(state.step) == NUM_STEPS
  chex.assert_trees_all_close(jax.device_get(state.params), ref_state.params, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(jax.device_get(state.opt_state), ref_state.opt_state, atol=1e-5, rtol=1e-5)
  # The engine's step is guarded against bad updates (core/guard.py), which adds its own metrics (the
  # task's step reports them too where it guards its own update, as on CPUs).
  guard_metrics = [{k: float(m.pop(k)) for k in ("skipped", "bad_steps")} for m in metrics]
  assert guard_metrics == [{"skipped": 0.0, "bad_steps": 0.0}] * NUM_STEPS
  for m in ref_metrics:
    for k in ("skipped", "bad_steps"):
      m.pop(k, None)
  chex.assert_trees_all_close(metrics, ref_metrics, atol=1e-5, rtol=1e-5)
  assert metrics[0]["loss"] > 0 and metrics[0]["grad_norm"] > 0
  return state


def test_fsdp_data4_x_fsdp2_matches_single_device():
  engine = _engine(["mesh.data=4", "mesh.fsdp=2", "mesh.params=fsdp", "mesh.fsdp_min_size=256"])
  assert dict(engine.mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  specs = [s.spec for s in jax.tree.leaves(engine.state_shardings.params)]
  sharded_specs = [s for s in specs if s != P()]
  assert sharded_specs, f"no param is sharded: {specs}"
  assert all("fsdp" in tuple(s) for s in sharded_specs)
  # The arrays themselves are laid out that way, not just the declared shardings.
  sharded_leaves = [x for x in jax.tree.leaves(engine.state.params) if "fsdp" in tuple(x.sharding.spec)]
  assert sharded_leaves
  leaf = sharded_leaves[0]
  assert leaf.addressable_shards[0].data.size == leaf.size // 2
  initial = jax.device_get(engine.state.params)
  state = _check_matches_single_device(engine)
  # The layout survives the step (out_shardings) and the params moved.
  assert any("fsdp" in tuple(x.sharding.spec) for x in jax.tree.leaves(state.params))
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                                       jax.device_get(state.params), initial))
  assert max(diffs) > 1e-4


def test_pure_data_parallel_matches_single_device():
  engine = _engine(["mesh.data=8", "mesh.fsdp=1", "mesh.params=replicate"])
  assert dict(engine.mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
  assert all(s.spec == P() for s in jax.tree.leaves(engine.state_shardings.params))
  # The batch is split over all 8 devices.
  batch = engine.put_batch(engine.train_data[0])
  assert len(batch["x"].sharding.device_set) == 8
  assert batch["x"].addressable_shards[0].data.shape[0] == batch["x"].shape[0] // 8
  _check_matches_single_device(engine)


def test_tensor_rules_and_zero1_match_single_device():
  # Megatron-style pair by regex: the first hidden layer split by columns, the
  # second by rows; the optimizer state also split over the batch axes (ZeRO-1).
  rules = '[[".*hidden_0/kernel",[null,tensor]],[".*hidden_0/bias",[tensor]],[".*hidden_1/kernel",[tensor]]]'
  engine = _engine(["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "mesh.params=replicate",
                    f"mesh.rules={rules}", "mesh.optimizer=zero1"])
  assert dict(engine.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  encoder = engine.state_shardings.params["encoder"]["mlp"]
  assert encoder["hidden_0"]["kernel"].spec == P(None, "tensor")
  assert encoder["hidden_0"]["bias"].spec == P("tensor")
  assert encoder["hidden_1"]["kernel"].spec == P("tensor")
  assert encoder["out"]["kernel"].spec == P()  # no rule: mesh.params=replicate
  # Params are replicated over the batch axes; their momentum buffers are split over them.
  batch_split = lambda spec: {"data", "fsdp"} <= set(jax.tree.leaves(tuple(spec)))
  assert not any(batch_split(s.spec) for s in jax.tree.leaves(engine.state_shardings.params))
  moments = [s.spec for s in jax.tree.leaves(engine.state_shardings.opt_state) if batch_split(s.spec)]
  assert len(moments) == len(jax.tree.leaves(engine.state_shardings.params))  # SGD's momentum trace
  _check_matches_single_device(engine)


@pytest.mark.parametrize("data,fsdp,message", [(3, -1, "does not divide"), (2, 2, "8 are available"),
                                               (-1, -1, "cannot both be -1")])
def test_bad_mesh_shapes_are_config_errors(data, fsdp, message):
  from jaxtrain.errors import ConfigError

  with pytest.raises(ConfigError, match=message):
    _engine([f"mesh.data={data}", f"mesh.fsdp={fsdp}"])
