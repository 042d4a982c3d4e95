"""Sharding rules: spec fitting, rule precedence, ZeRO-1, golden PartitionSpecs of a
transformer's params for each strategy on 8 devices, and a tensor-parallel step."""

import chex
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxtrain.build import build
from jaxtrain.config import compose
from jaxtrain.config.validate import validate
from jaxtrain.core import mesh as mesh_lib
from jaxtrain.core import sharding
from jaxtrain.tasks.lm import LMConfig, LMTask

# The lm "base" shape (d_model 768, 12 heads, SwiGLU d_ff 2048, untied output) with 2 of its 12 layers.
BASE = dict(d_model=768, n_layers=2, n_heads=12, d_ff=2048, tie_embeddings=False)

# Per strategy: mesh (data, fsdp, tensor), mesh.params, and the spec of every param of a block and of the ends.
GOLDEN = {
    "replicate": ((8, 1, 1), "replicate", {
        "attention/query/kernel": P(), "attention/key/kernel": P(), "attention/value/kernel": P(),
        "attention/out/kernel": P(), "attention_norm/scale": P(), "mlp/gate/kernel": P(),
        "mlp/up/kernel": P(), "mlp/down/kernel": P(), "mlp_norm/scale": P(),
    }, {"embed/embedding": P(), "final_norm/scale": P(), "output/kernel": P()}),
    "fsdp": ((1, 8, 1), "fsdp", {
        "attention/query/kernel": P("fsdp"), "attention/key/kernel": P("fsdp"), "attention/value/kernel": P("fsdp"),
        "attention/out/kernel": P(None, None, "fsdp"), "attention_norm/scale": P(), "mlp/gate/kernel": P("fsdp"),
        "mlp/up/kernel": P("fsdp"), "mlp/down/kernel": P(None, "fsdp"), "mlp_norm/scale": P(),
    }, {"embed/embedding": P(None, "fsdp"), "final_norm/scale": P(), "output/kernel": P("fsdp")}),
    # Megatron pairs: q/k/v and the MLP's gate/up split by heads/hidden units, out and down by
    # their inputs, so each block needs one reduction per pair; FSDP splits the model width.
    "fsdp_tensor": ((1, 4, 2), "fsdp", {
        "attention/query/kernel": P("fsdp", "tensor"), "attention/key/kernel": P("fsdp", "tensor"),
        "attention/value/kernel": P("fsdp", "tensor"), "attention/out/kernel": P("tensor", None, "fsdp"),
        "attention_norm/scale": P(), "mlp/gate/kernel": P("fsdp", "tensor"), "mlp/up/kernel": P("fsdp", "tensor"),
        "mlp/down/kernel": P("tensor", "fsdp"), "mlp_norm/scale": P(),
    }, {"embed/embedding": P("tensor", "fsdp"), "final_norm/scale": P(), "output/kernel": P("fsdp", "tensor")}),
}


@pytest.fixture(scope="module")
def base_lm():
  task = LMTask(LMConfig(**BASE), {"tokens": np.zeros((8, 1025), np.int32)})
  params, _ = jax.eval_shape(task.init, jax.random.PRNGKey(0))  # shapes only: nothing is allocated
  return params, task.logical_axes()


@pytest.mark.parametrize("strategy", sorted(GOLDEN))
def test_golden_partition_specs_of_the_transformer(base_lm, strategy):
  params, logical_axes = base_lm
  (data, fsdp, tensor), fallback, block, ends = GOLDEN[strategy]
  mesh = mesh_lib.make_mesh(data, fsdp, tensor=tensor)
  specs = sharding.param_specs(params, mesh, logical_axes=logical_axes, fallback=fallback)
  expected = {f"block_{i}/{name}": spec for i in range(BASE["n_layers"]) for name, spec in block.items()}
  expected.update(ends)
  assert sharding.describe(specs) == {name: str(spec) for name, spec in expected.items()}
  # Every spec fits its param: each split dimension divides evenly.
  for spec, leaf in zip(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)), jax.tree.leaves(params)):
    jax.sharding.NamedSharding(mesh, spec).shard_shape(leaf.shape)


def test_fit_spec_drops_axes_that_do_not_divide_or_repeat():
  mesh = mesh_lib.make_mesh(2, 2, tensor=2)
  assert sharding.fit_spec(["fsdp", "tensor"], (8, 6), mesh) == P("fsdp", "tensor")
  assert sharding.fit_spec(["fsdp", "tensor"], (7, 6), mesh) == P(None, "tensor")  # 7 rows: not split
  assert sharding.fit_spec(["tensor", "tensor"], (4, 4), mesh) == P("tensor")  # an axis splits one dim only
  assert sharding.fit_spec([("data", "fsdp"), None], (8, 3), mesh) == P(("data", "fsdp"))
  assert sharding.fit_spec([("data", "fsdp")], (2, 3), mesh) == P("data")  # 2 rows: only the first axis fits
  with pytest.raises(ValueError, match="mesh axis 'model'"):
    sharding.fit_spec(["model"], (4,), mesh)


def test_regex_rules_come_before_logical_names(base_lm):
  params, logical_axes = base_lm
  mesh = mesh_lib.make_mesh(1, 4, tensor=2)
  specs = sharding.param_specs(params, mesh, logical_axes=logical_axes, fallback="fsdp",
                               rules=[[r".*mlp/down/kernel", []], [r"embed/.*", [None, "tensor"]]])
  described = sharding.describe(specs)
  assert described["block_0/mlp/down/kernel"] == "P()"
  assert described["embed/embedding"] == str(P(None, "tensor"))
  assert described["block_0/mlp/up/kernel"] == str(P("fsdp", "tensor"))  # untouched by the rules


def test_zero1_splits_optimizer_state_over_the_batch_axes():
  mesh = mesh_lib.make_mesh(4, 2)
  assert sharding.zero1_spec(P(None, "fsdp"), (64, 32), mesh) == P("data", "fsdp")
  assert sharding.zero1_spec(P(), (3,), mesh) == P()  # nothing divides: stays as it was
  assert sharding.zero1_spec(P(), (16, 8), mesh) == P(("data", "fsdp"))


def _lm_engine(*mesh_overrides):
  tiny = ["task=lm", "task.d_model=64", "task.n_layers=2", "task.n_heads=4", "task.d_ff=128", "data.seq_len=16",
          "data.max_bytes=40000", "data.batch_size=16", "data.eval_batch_size=16", "trainer.steps=10",
          "optim=sgd", "optim.lr=0.1", "schedule=constant", "optim.clip_norm=null"]
  return build(validate(compose.compose([*tiny, *mesh_overrides])))


def test_tensor_parallel_lm_step_matches_one_device():
  engine = _lm_engine("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "mesh.params=fsdp", "mesh.fsdp_min_size=256",
                      "mesh.optimizer=zero1")
  specs = sharding.describe(jax.tree.map(lambda s: s.spec, engine.state_shardings.params))
  assert specs["block_0/attention/query/kernel"] == str(P("fsdp", "tensor"))
  host_batches = [engine.train_data[i] for i in range(2)]
  device = jax.devices()[0]
  ref_state = jax.device_put(jax.device_get(engine.state), device)
  ref_step = jax.jit(engine.task.train_step())
  for batch in host_batches:
    ref_state, ref_metrics = ref_step(ref_state, jax.device_put(batch, device))
  state = engine.state
  for batch in host_batches:
    state, metrics = engine.train_step(state, engine.put_batch(batch))
  chex.assert_trees_all_close(jax.device_get(state.params), jax.device_get(ref_state.params), atol=2e-5, rtol=2e-4)
  np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-4)
