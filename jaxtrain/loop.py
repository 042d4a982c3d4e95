"""fit(): the training loop. The only `while` in the package.

The loop owns three things: the TrainState, the data iterator and the small
bookkeeping record. Everything else happens in periodic actions, called in
order after every step: evaluation, early stopping, checkpoint, logging,
progress. Orbax saves state, iterator and bookkeeping together, so a resumed
loop continues exactly where the checkpoint was taken.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator, Sequence

import jax

from jaxtrain.actions.base import Bookkeeping, LoopContext, PeriodicAction


@dataclasses.dataclass(frozen=True)
class FitResult:
  """Final state and the loop's own measurements."""

  state: Any
  book: Bookkeeping
  final_step: int
  steps_run: int
  loop_seconds: float
  stopped_early: bool
  preempted: bool = False
  input_wait_seconds: float = 0.0  # in next(data_iterator) with no dispatched step still running
  # The process's CPU time over the same span (every thread: the loop, XLA's CPU compute, data threads).
  loop_cpu_seconds: float = 0.0

  @property
  def input_wait_fraction(self) -> float | None:
    """Share of the loop's wall time the devices waited for data (None when it ran no step)."""
    return self.input_wait_seconds / self.loop_seconds if self.steps_run and self.loop_seconds > 0 else None

  @property
  def diverged(self) -> bool:
    """Stopped because too many consecutive updates were skipped."""
    return self.book.diverged

  @property
  def cpu_ms_per_step(self) -> float | None:
    """Process CPU milliseconds per step of this call (None when it ran no step)."""
    return 1e3 * self.loop_cpu_seconds / self.steps_run if self.steps_run else None

  @property
  def steps_per_sec(self) -> float | None:
    """Steps per second of this call (None when it ran no step)."""
    return self.steps_run / self.loop_seconds if self.steps_run and self.loop_seconds > 0 else None


def fit(state: Any, train_step: Callable[[Any, Any], tuple[Any, Any]], data_iterator: Iterator[Any],
        actions: Sequence[PeriodicAction], *, start_step: int, total_steps: int, steps_per_epoch: int,
        book: Bookkeeping | None = None, should_stop: Callable[[int], bool] | None = None,
        on_exception: Callable[[LoopContext, Exception], None] | None = None,
        max_in_flight: int = 8) -> FitResult:
  """Runs `train_step` from `start_step` to `total_steps` (or an early stop).

  `train_step` should already be compiled; the loop's timing assumes so.
  `should_stop(step)` is polled after every step (preemption); when it says
  yes, the loop ends and only preemption-safe actions run. `on_exception`
  sees the loop's context before an exception propagates (an emergency
  checkpoint, say). At most `max_in_flight` dispatched steps may be unfinished
  at once (0 = no limit).
  """
  book = book or Bookkeeping()
  ctx = LoopContext(step=start_step, total_steps=total_steps, steps_per_epoch=steps_per_epoch, state=state,
                    train_metrics=None, data_iterator=data_iterator, book=book)
  in_flight: collections.deque = collections.deque()
  start = ctx.started_at = time.perf_counter()
  cpu_start = time.process_time()
  try:
    while ctx.step < total_steps and not ctx.stop_requested:
      waiting_since = time.perf_counter()
      batch = next(data_iterator)
      # Time in next() is input wait only if the devices ran out of work
      # meanwhile: while the last dispatched step still runs, reading the next
      # batch (even inline) costs the devices nothing. Once it has finished,
      # all of next() counts (an upper bound: it may have finished just now).
      if not in_flight or _finished(in_flight[-1]):
        ctx.input_wait_secs += time.perf_counter() - waiting_since
      # Batches arrive already on the devices; any implicit host<->device
      # transfer inside the step would be a hidden sync, so it is an error.
      # The first step of the call is checked: later batches come from the same
      # pipeline, and entering the guard costs ~50 us of host time per step.
      guard = jax.transfer_guard("disallow") if ctx.step == start_step else contextlib.nullcontext()
      with guard:
        ctx.state, ctx.train_metrics = train_step(ctx.state, batch)
      ctx.step += 1
      # A few queued steps hide the host's work; hundreds only hold buffers,
      # and on many CPU devices sharing few cores a deep queue starved XLA's
      # collectives into an abort. Wait for the oldest step when the window is full.
      in_flight.append(ctx.train_metrics)
      if max_in_flight and len(in_flight) > max_in_flight:
        jax.block_until_ready(in_flight.popleft())
      for action in actions:
        action(ctx)
      if should_stop is not None and should_stop(ctx.step):
        ctx.preempted = ctx.stop_requested = True
    jax.block_until_ready(ctx.state)
    loop_seconds = time.perf_counter() - start
    loop_cpu_seconds = time.process_time() - cpu_start
    # Final round: actions with at_end run once more unless they just ran.
    ctx.final = True
    for action in actions:
      action(ctx)
  except Exception as err:
    if on_exception is not None:
      on_exception(ctx, err)
    raise
  finally:
    for action in actions:
      action.close()
  return FitResult(state=ctx.state, book=book, final_step=ctx.step, steps_run=ctx.step - start_step,
                   loop_seconds=loop_seconds, stopped_early=book.stop_reason is not None,
                   preempted=ctx.preempted, input_wait_seconds=ctx.input_wait_secs,
                   loop_cpu_seconds=loop_cpu_seconds)


def _finished(outputs: Any) -> bool:
  """Whether a dispatched step's outputs are computed (without waiting for them).
  One output tells for all: they come from the same executable."""
  leaves = jax.tree.leaves(outputs)
  return not leaves or not hasattr(leaves[0], "is_ready") or leaves[0].is_ready()
