"""Several train steps in one compiled call (trainer.steps_per_call).

Each call of a compiled step costs the host a dispatch: flattening the state,
checking the arguments, enqueuing the executable. For a small model that is a
good part of a step; on the 2-core CPU VM of BENCHMARKS.md it is ~330 µs of a
~3.3 ms digits step, taken from the cores that compute. `scan_steps` runs k
steps as a `lax.scan` over k batches, so the host pays one dispatch per k steps;
every step inside is the same function, with the same updates in the same
order as k separate calls.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

StepFn = Callable[[Any, Any], tuple[Any, Any]]


def scan_steps(step_fn: StepFn) -> Callable[[Any, tuple], tuple[Any, Any]]:
  """`(state, batch) -> (state, metrics)` to `(state, (batch_1, ..., batch_k)) -> (state,
  metrics of step k)`: the steps run one after the other, inside one computation.

  The batches come as a tuple, so the data pipeline hands out one batch at a
  time as usual and each keeps its own layout on the mesh; they are stacked on
  the devices. Only the last step's metrics come back: loggers read a step's
  metrics, and `bad_steps` counts up to the last step.
  """

  def train_steps(state: Any, batches: tuple) -> tuple[Any, Any]:
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *batches)
    state, metrics = jax.lax.scan(step_fn, state, stacked)
    return state, jax.tree.map(lambda m: m[-1], metrics)

  return train_steps
