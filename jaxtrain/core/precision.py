"""Mixed precision and rematerialisation as wrappers around a task's loss. Pure: no I/O.

bf16 keeps what must stay exact in float32 — params, optimizer state, the
update and EMA — and runs the forward and backward passes in bfloat16: the
loss sees bf16 copies of the params and of the floating inputs, and the
gradient flows back through the cast into float32. (bf16 has float32's
exponent range, so no loss scaling is needed, unlike float16.)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxtrain.core.step import WEIGHT_KEY, LossFn

PRECISIONS = {"fp32": None, "bf16": jnp.bfloat16}
REMAT_POLICIES = {
    "none": None,
    # Keep nothing: recompute the whole forward pass in the backward pass.
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep matmul outputs (the expensive part), recompute the cheap elementwise rest.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def compute_dtype(precision: str) -> Any:
  """The compute dtype for trainer.precision (None: float32, no casts)."""
  if precision not in PRECISIONS:
    raise ValueError(f"trainer.precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
  return PRECISIONS[precision]


def cast_floats(tree: Any, dtype: Any) -> Any:
  """Every floating-point leaf of `tree` as `dtype`; integer and bool leaves unchanged."""
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

  return jax.tree.map(cast, tree)


def cast_like(tree: Any, reference: Any) -> Any:
  """`tree` with each leaf cast to the dtype of the matching leaf of `reference`
  (model state computed in bf16 goes back into float32 buffers)."""
  return jax.tree.map(lambda x, ref: x.astype(ref.dtype), tree, reference)


def with_compute_dtype(loss_fn: LossFn, dtype: Any) -> LossFn:
  """`loss_fn` run on `dtype` copies of the params and float inputs; loss and
  metrics come back as float32 (so sums over many eval batches stay exact).
  The example weights stay float32: they are counts, not activations."""
  if dtype is None:
    return loss_fn

  def loss(params, model_state, batch, rng, train):
    inputs = {k: v if k == WEIGHT_KEY else cast_floats(v, dtype) for k, v in batch.items()}
    value, (metrics, new_model_state) = loss_fn(cast_floats(params, dtype), model_state, inputs, rng, train)
    return value.astype(jnp.float32), (cast_floats(metrics, jnp.float32), cast_like(new_model_state, model_state))

  return loss


def with_remat(loss_fn: LossFn, policy: str) -> LossFn:
  """`loss_fn` whose activations are recomputed in the backward pass under
  `policy` (model.remat), trading compute for activation memory."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"model.remat={policy!r}: choose one of {', '.join(REMAT_POLICIES)}")
  if REMAT_POLICIES[policy] is None:
    return loss_fn
  # `train` (argument 4) is a Python bool that selects code paths: static.
  return jax.checkpoint(loss_fn, policy=REMAT_POLICIES[policy], static_argnums=(4,))
