"""Per-device code inside a compiled step, through `jax.shard_map`. Pure: no I/O.

Most losses need no per-device code: jit over the mesh partitions them. Some
do — a contrastive loss over each device's own negatives, statistics per
device shard, a custom collective — and `per_device_loss` runs such a loss on
each device's rows of the batch, then combines the per-device results into
the global weighted means the rest of jaxtrain expects.

Gradients: the params enter replicated (`P()`), and shard_map (with its
default `check_vma=True`) already sums their cotangents over devices, so the
combination below uses psum of weight-scaled values and nothing else; adding
a pmean/psum of the gradients on top would scale them by the device count.
tests/test_per_device.py checks the gradient against one device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxtrain.core.mesh import BATCH_AXES
from jaxtrain.core.step import LossFn, example_weights


def per_device_loss(loss_fn: LossFn, mesh: Mesh) -> LossFn:
  """`loss_fn` evaluated on each device's batch shard, combined exactly.

  Each device's loss and metrics are weighted batch means over its own rows;
  weighting them by the device's share of the total example weight gives the
  global means. Float model state (e.g. batch statistics) is averaged over
  devices; each device draws from its own PRNG stream.
  """
  axes = tuple(axis for axis in BATCH_AXES if axis in mesh.shape)

  def local(params: Any, model_state: Any, batch: Any, rng: jax.Array, train: bool):
    index = jax.lax.axis_index(axes)
    loss, (metrics, new_model_state) = loss_fn(params, model_state, batch, jax.random.fold_in(rng, index), train)
    weight = jnp.sum(example_weights(batch))
    share = weight / jnp.maximum(jax.lax.psum(weight, axes), 1e-12)
    combine = lambda value: jax.lax.psum(value * share, axes)
    new_model_state = jax.tree.map(
        lambda x: jax.lax.pmean(x, axes) if jnp.issubdtype(x.dtype, jnp.floating) else x, new_model_state)
    return combine(loss), (jax.tree.map(combine, metrics), new_model_state)

  def loss(params: Any, model_state: Any, batch: Any, rng: jax.Array, train: bool):
    sharded = jax.shard_map(lambda p, s, b, r: local(p, s, b, r, train), mesh=mesh,
                            in_specs=(P(), P(), P(axes), P()), out_specs=P())
    return sharded(params, model_state, batch, rng)

  return loss
