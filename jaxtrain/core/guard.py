"""Skipping bad updates inside the compiled step: non-finite loss or gradients,
and (optionally) loss spikes far above the recent average.

A `StepGuard` judges a step from its loss, its gradient norm and the loss
statistics carried in the state (`GuardState`), and keeps those statistics.
The default train step (core/step.py) asks it before updating and runs the
update under `lax.cond`, as `optax.apply_if_finite` does (on CPUs and TPUs:
build.py); `guarded` wraps any other step (a task's own, with several
optimizers, or any step on GPUs) and keeps its old state by a select after the fact.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxtrain.core.guard_state import GuardState
from jaxtrain.core.step import Metrics, TrainStep


@dataclasses.dataclass(frozen=True)
class StepGuard:
  """When an update is bad, and the bookkeeping of bad updates.

  A step is bad when its loss or gradient norm is NaN/Inf (`skip_nonfinite`),
  or, with `spike_zscore`, when the loss exceeds the running mean by that many
  standard deviations (statistics over roughly the last `spike_window` good
  steps, used once that many have been seen).
  """

  skip_nonfinite: bool = True
  spike_zscore: float | None = None
  spike_window: int = 100

  def update_ok(self, loss: jax.Array, grad_norm: jax.Array | None, guard: GuardState) -> jax.Array:
    """Whether the step's update should be applied (a boolean scalar)."""
    loss = loss.astype(jnp.float32)
    ok = jnp.ones((), bool)
    if self.skip_nonfinite:
      ok &= jnp.isfinite(loss)
      if grad_norm is not None:
        ok &= jnp.isfinite(grad_norm)
    if self.spike_zscore is not None:
      std = jnp.sqrt(guard.loss_var + 1e-12)
      warmed_up = guard.good_steps >= self.spike_window
      ok &= ~(warmed_up & (loss > guard.loss_mean + self.spike_zscore * std))
    return ok

  def record(self, ok: jax.Array, loss: jax.Array, guard: GuardState) -> tuple[GuardState, Metrics]:
    """The guard state after this step, and the metrics `skipped` (1.0 on a bad step)
    and `bad_steps` (consecutive)."""
    loss = loss.astype(jnp.float32)
    decay = 1.0 - 1.0 / max(2, self.spike_window)
    # Welford-style exponential statistics of the loss over good steps.
    first = guard.good_steps == 0
    mean = jnp.where(first, loss, decay * guard.loss_mean + (1 - decay) * loss)
    var = jnp.where(first, 0.0, decay * (guard.loss_var + (1 - decay) * jnp.square(loss - guard.loss_mean)))
    new_guard = GuardState(
        consecutive_bad=jnp.where(ok, 0, guard.consecutive_bad + 1),
        total_skipped=guard.total_skipped + (~ok).astype(jnp.int32),
        loss_mean=jnp.where(ok, mean, guard.loss_mean),
        loss_var=jnp.where(ok, var, guard.loss_var),
        good_steps=guard.good_steps + ok.astype(jnp.int32),
    )
    return new_guard, {"skipped": (~ok).astype(jnp.float32), "bad_steps": new_guard.consecutive_bad}


def guarded(train_step: TrainStep, guard: StepGuard | None = None, **settings) -> TrainStep:
  """Wraps any train step so that a bad update leaves the state as it was.

  `guard` (or StepGuard(**settings)) judges the step by its `loss` and, when
  reported, `grad_norm` metric. A bad step still advances `state.step`, so the
  data order and PRNG streams stay those of an uninterrupted run; the metrics
  gain `skipped` and `bad_steps`. A step that already guards its own update
  (the default step given a guard) is returned as it is.
  """
  guard = guard or StepGuard(**settings)
  if getattr(train_step, "guards_updates", False):
    return train_step

  @functools.wraps(train_step)  # keeps the name jax logs compilations under
  def step(state, batch):
    new_state, metrics = train_step(state, batch)
    ok = guard.update_ok(metrics["loss"], metrics.get("grad_norm"), state.guard)
    # The step's update has already run: the old state is kept by a select. (On a CPU this
    # makes XLA copy the optimizer moments first; the default step avoids it with lax.cond.)
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    new_guard, guard_metrics = guard.record(ok, metrics["loss"], state.guard)
    return kept.replace(step=state.step + 1, guard=new_guard), dict(metrics, **guard_metrics)

  step.guards_updates = True
  return step
