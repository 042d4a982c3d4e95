"""A loss run per device with jax.shard_map gives the single-device loss and gradients."""

import chex
import jax
import numpy as np

from jaxtrain.build import build
from jaxtrain.config import compose
from jaxtrain.config.validate import validate
from jaxtrain.core.per_device import per_device_loss


def test_per_device_loss_matches_one_device_including_gradients():
  engine = build(validate(compose.compose(["trainer.steps=10", "trainer.epochs=null", "mesh.data=4",
                                           "mesh.fsdp=2", "mesh.params=replicate"])))
  task, state = engine.task, jax.device_get(engine.state)
  batch = dict(jax.device_get(engine.train_data[0]))
  # Uneven weights, some rows masked out: the per-device shares must still add up exactly.
  batch["weight"] = np.random.default_rng(0).integers(0, 3, len(batch["x"])).astype(np.float32)
  rng = jax.random.PRNGKey(0)

  def value_and_grad(loss_fn):
    fn = lambda params: loss_fn(params, state.model_state, batch, rng, True)
    return jax.jit(jax.value_and_grad(fn, has_aux=True))(state.params)

  (ref_loss, (ref_metrics, _)), ref_grads = jax.device_get(value_and_grad(task.loss))
  (loss, (metrics, _)), grads = jax.device_get(value_and_grad(per_device_loss(task.loss, engine.mesh)))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  chex.assert_trees_all_close(metrics, ref_metrics, rtol=1e-5, atol=1e-7)
  # Not 8x (a pmean/psum of gradients on top of shard_map's own sum) and not 1/8x.
  chex.assert_trees_all_close(grads, ref_grads, rtol=1e-4, atol=1e-7)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-4
