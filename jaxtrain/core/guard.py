"""Skipping bad updates inside the compiled step: non-finite loss or gradients,
and (optionally) loss spikes far above the recent average."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtrain.core.guard_state import GuardState
from jaxtrain.core.step import TrainStep


def guarded(train_step: TrainStep, *, skip_nonfinite: bool = True, spike_zscore: float | None = None,
            spike_window: int = 100) -> TrainStep:
  """Wraps any train step so that a bad update leaves the state as it was.

  A step is bad when its loss or grad_norm metric is NaN/Inf, or, with
  `spike_zscore`, when the loss exceeds the running mean by that many standard
  deviations (statistics over roughly the last `spike_window` good steps, used
  once that many have been seen). A bad step still advances `state.step`, so
  the data order and PRNG streams stay those of an uninterrupted run; the
  metrics gain `skipped` (1.0 on a bad step) and `bad_steps` (consecutive).
  """
  decay = 1.0 - 1.0 / max(2, spike_window)

  @functools.wraps(train_step)  # keeps the name jax logs compilations under
  def step(state, batch):
    new_state, metrics = train_step(state, batch)
    loss = metrics["loss"].astype(jnp.float32)
    ok = jnp.ones((), bool)
    if skip_nonfinite:
      ok &= jnp.isfinite(loss)
      if "grad_norm" in metrics:
        ok &= jnp.isfinite(metrics["grad_norm"])
    guard = state.guard
    if spike_zscore is not None:
      std = jnp.sqrt(guard.loss_var + 1e-12)
      warmed_up = guard.good_steps >= spike_window
      ok &= ~(warmed_up & (loss > guard.loss_mean + spike_zscore * std))
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
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
    kept = kept.replace(step=state.step + 1, guard=new_guard)
    metrics = dict(metrics, skipped=(~ok).astype(jnp.float32), bad_steps=new_guard.consecutive_bad)
    return kept, metrics

  return step
