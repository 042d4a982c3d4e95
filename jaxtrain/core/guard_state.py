"""The guard's part of the TrainState (kept apart from core/guard.py to avoid an import cycle)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class GuardState:
  """Counters and loss statistics carried in the TrainState (so they resume exactly)."""

  consecutive_bad: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.int32))
  total_skipped: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.int32))
  loss_mean: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.float32))
  loss_var: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.float32))
  good_steps: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.int32))
