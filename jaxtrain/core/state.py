"""TrainState: everything a training step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxtrain.core.guard_state import GuardState


@struct.dataclass
class TrainState:
  """Step counter, params, optimizer state, PRNG key, model state and optional EMA.

  Tasks that need more (a discriminator and its optimizer state, say) put it in
  `extra`; it is sharded, checkpointed and donated like the rest.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  model_state: Any = struct.field(default_factory=dict)  # e.g. BatchNorm statistics
  ema_params: Any = None
  extra: Any = struct.field(default_factory=dict)
  # Bad-update counters and loss statistics (see core/guard.py).
  guard: Any = None
  tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)
  ema_decay: float | None = struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, *, params: Any, tx: optax.GradientTransformation, rng: jax.Array,
             model_state: Any = None, ema_decay: float | None = None, extra: Any = None) -> "TrainState":
    """A fresh state at step 0 (call inside `jax.jit` to build it on the mesh)."""
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=rng,
        model_state={} if model_state is None else model_state,
        ema_params=jax.tree.map(jnp.copy, params) if ema_decay else None,
        extra={} if extra is None else extra,
        guard=GuardState(),
        tx=tx,
        ema_decay=ema_decay,
    )

  def apply_gradients(self, grads: Any, **changes: Any) -> "TrainState":
    """One optimizer update; also advances the step and the EMA."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if self.ema_decay:
      ema = optax.incremental_update(params, ema, step_size=1.0 - self.ema_decay)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema, **changes)

  def step_rng(self) -> jax.Array:
    """The PRNG key of the current step: a pure function of the seed and the step,
    so a resumed run draws exactly the numbers an uninterrupted one would."""
    return jax.random.fold_in(self.rng, self.step)


def init_state_fn(init_params: Callable[[jax.Array], tuple[Any, Any]], tx: optax.GradientTransformation,
                  ema_decay: float | None = None,
                  init_extra: Callable[[jax.Array], Any] | None = None) -> Callable[[jax.Array], TrainState]:
  """Returns `rng -> TrainState`, suitable for `jax.jit(..., out_shardings=...)`.

  `init_params(rng)` returns `(params, model_state)`; `init_extra(rng)`, when
  given, returns the task's `extra` state.
  """

  def init(rng: jax.Array) -> TrainState:
    init_rng, state_rng = jax.random.split(rng)
    params, model_state = init_params(init_rng)
    # The extra state draws from its own key, so adding it leaves params unchanged.
    extra = init_extra(jax.random.fold_in(init_rng, 1)) if init_extra is not None else None
    return TrainState.create(params=params, tx=tx, rng=state_rng, model_state=model_state, ema_decay=ema_decay,
                             extra=extra)

  return init
