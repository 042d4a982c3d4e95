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
        max_in_flight: int = 8, multi_step: Callable[[Any, tuple], tuple[Any, Any]] | None = None,
        steps_per_call: int = 1) -> FitResult:
  """Runs `train_step` from `start_step` to `total_steps` (or an early stop).

  `train_step` should already be compiled; the loop's timing assumes so.
  With `multi_step` (which takes a tuple of `steps_per_call` batches), each call
  runs that many steps wherever they fit before the end and before the next
  step of a step-exact action (`call_length`); elsewhere `train_step` runs one.
  `should_stop(step)` is polled after every call (preemption); when it says
  yes, the loop ends and only preemption-safe actions run. `on_exception`
  sees the loop's context before an exception propagates (an emergency
  checkpoint, say). At most `max_in_flight` dispatched steps may be unfinished
  at once (0 = no limit), and always at least one call.
  """
  book = book or Bookkeeping()
  ctx = LoopContext(step=start_step, total_steps=total_steps, steps_per_epoch=steps_per_epoch, state=state,
                    train_metrics=None, data_iterator=data_iterator, book=book)
  in_flight: collections.deque = collections.deque()  # (outputs of a call, its steps)
  steps_in_flight = 0
  checked: set = set()  # step functions whose first call ran under the transfer guard
  if multi_step is None:
    steps_per_call = 1
  start = ctx.started_at = time.perf_counter()
  cpu_start = time.process_time()
  try:
    while ctx.step < total_steps and not ctx.stop_requested:
      length = call_length(ctx.step, total_steps, steps_per_call, actions)
      waiting_since = time.perf_counter()
      if length == 1:
        batch, step_fn = next(data_iterator), train_step
      else:
        batch, step_fn = tuple(next(data_iterator) for _ in range(length)), multi_step
      # Time in next() is input wait only if the devices ran out of work
      # meanwhile: while the last dispatched step still runs, reading the next
      # batch (even inline) costs the devices nothing. Once it has finished,
      # all of next() counts (an upper bound: it may have finished just now).
      if not in_flight or _finished(in_flight[-1][0]):
        ctx.input_wait_secs += time.perf_counter() - waiting_since
      # Batches arrive already on the devices; any implicit host<->device
      # transfer inside the step would be a hidden sync, so it is an error.
      # The first call of each step function is checked: later batches come from the
      # same pipeline, and entering the guard costs ~50 us of host time per step.
      guard = contextlib.nullcontext()
      if step_fn not in checked:
        checked.add(step_fn)
        guard = jax.transfer_guard("disallow")
      with guard:
        ctx.state, ctx.train_metrics = step_fn(ctx.state, batch)
      ctx.call_start = ctx.step
      ctx.step += length
      # A few queued steps hide the host's work; hundreds only hold buffers,
      # and on many CPU devices sharing few cores a deep queue starved XLA's
      # collectives into an abort. Wait for the oldest call when the window is full.
      in_flight.append((ctx.train_metrics, length))
      steps_in_flight += length
      while max_in_flight and steps_in_flight > max_in_flight and len(in_flight) > 1:
        outputs, steps = in_flight.popleft()
        jax.block_until_ready(outputs)
        steps_in_flight -= steps
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


def call_length(step: int, total_steps: int, steps_per_call: int, actions: Sequence[PeriodicAction]) -> int:
  """Steps the next call runs from `step`: `steps_per_call` when they fit before
  `total_steps` and before the next step of every step-exact action, else one."""
  if steps_per_call <= 1:
    return 1
  end = step + steps_per_call
  if end > total_steps:
    return 1
  for action in actions:
    if action.step_exact:
      due = action.next_step(step)
      if due is not None and due < end:
        return 1
  return steps_per_call


def call_lengths(start_step: int, total_steps: int, steps_per_call: int,
                 actions: Sequence[PeriodicAction], max_calls: int = 10_000) -> set[int]:
  """The call lengths a run from `start_step` will use (to compile each before the clock
  starts). Checks `max_calls` calls at most, then assumes both lengths."""
  if total_steps <= start_step:
    return set()
  if steps_per_call <= 1 or total_steps - start_step < steps_per_call:
    return {1}
  exact = [a for a in actions if a.step_exact]
  if all(s % steps_per_call == 0 for s in (start_step, total_steps, *(n for a in exact for n in a.every_steps),
                                           *(s for a in exact for s in a.on_steps if s > start_step))):
    return {steps_per_call}  # every boundary is a whole number of calls away
  lengths, step = set(), start_step
  for _ in range(max_calls):
    if step >= total_steps or len(lengths) == 2:
      return lengths
    length = call_length(step, total_steps, steps_per_call, actions)
    lengths.add(length)
    step += length
  return {1, steps_per_call}


def _finished(outputs: Any) -> bool:
  """Whether a dispatched step's outputs are computed (without waiting for them).
  One output tells for all: they come from the same executable."""
  leaves = jax.tree.leaves(outputs)
  return not leaves or not hasattr(leaves[0], "is_ready") or leaves[0].is_ready()
