"""The periodic-action contract: every N steps, every N seconds, on given steps, at the end."""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any, Iterable


@dataclasses.dataclass
class Bookkeeping:
  """The loop's small host-side record, saved in every checkpoint as JSON."""

  best_step: int | None = None
  best_value: float | None = None
  last_eval_step: int | None = None
  last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
  early_stopping_best: float | None = None
  early_stopping_bad_evals: int = 0
  stop_reason: str | None = None
  diverged: bool = False  # stopped by trainer.max_bad_steps

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "Bookkeeping":
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass
class LoopContext:
  """What an action sees: the current step, state and the loop's bookkeeping.

  `train_metrics` are the latest step's metrics, still on the device; an action
  that needs their values should read them late (see LogTrainMetrics).
  """

  step: int
  total_steps: int
  steps_per_epoch: int
  state: Any
  train_metrics: Any
  data_iterator: Any
  book: Bookkeeping
  final: bool = False
  stop_requested: bool = False
  # Set when a preemption signal stopped the loop: the final round then runs
  # only the actions that must (the checkpoint), to fit in the grace period.
  preempted: bool = False
  # Seconds this call of fit() spent blocked in next(data_iterator), and when it started
  # (time.perf_counter): the input-wait fraction of any interval comes from these two.
  input_wait_secs: float = 0.0
  started_at: float = dataclasses.field(default_factory=time.perf_counter)
  # The step the latest call of the train step started from: with trainer.steps_per_call
  # a call may run several steps, and actions not bound to exact steps run after it.
  call_start: int | None = None

  @property
  def epoch(self) -> float:
    return self.step / self.steps_per_epoch


class PeriodicAction(abc.ABC):
  """Runs `run(ctx)` when due. Subclasses implement `run`.

  Due when the step is a multiple of one of `every_steps`, when `every_secs`
  have passed since the last run, when the step is in `on_steps`, or at the
  end of training if `at_end` (after a preemption only if `runs_on_preemption`).

  A call of the train step may run several steps (trainer.steps_per_call). The
  loop ends a call exactly at the steps of every `step_exact` action, so those
  run at their own steps; an action that is not (`step_exact = False`) runs
  after the call in which one of its steps fell.
  """

  runs_on_preemption = False
  step_exact = True

  def __init__(self, *, every_steps: int | Iterable[int] | None = None, every_secs: float | None = None,
               on_steps: Iterable[int] = (), at_end: bool = True):
    if isinstance(every_steps, int):
      every_steps = (every_steps,)
    self.every_steps = tuple(n for n in (every_steps or ()) if n and n > 0)
    self.every_secs = every_secs
    self.on_steps = frozenset(on_steps)
    self.at_end = at_end
    self._last_time = time.monotonic()
    self._last_step: int | None = None

  def due(self, step: int, final: bool, preempted: bool = False, since: int | None = None) -> bool:
    """Whether to run after the loop reached `step` from `since` (default: step - 1)."""
    if step == self._last_step:
      return False  # never twice for the same step (the final call may repeat it)
    if final:
      return self.at_end and (self.runs_on_preemption or not preempted)
    since = step - 1 if since is None else since
    if since == step - 1:  # one step: the common case, kept cheap
      if step in self.on_steps or any(step % n == 0 for n in self.every_steps):
        return True
    elif any(since < s <= step for s in self.on_steps) or any(step // n > since // n for n in self.every_steps):
      return True
    return self.every_secs is not None and time.monotonic() - self._last_time >= self.every_secs

  def next_step(self, after: int) -> int | None:
    """The first step after `after` that is one of this action's steps (None: none is)."""
    candidates = [(after // n + 1) * n for n in self.every_steps] + [s for s in self.on_steps if s > after]
    return min(candidates, default=None)

  def __call__(self, ctx: LoopContext) -> None:
    if self.due(ctx.step, ctx.final, ctx.preempted, ctx.call_start):
      self._last_step = ctx.step
      self._last_time = time.monotonic()
      self.run(ctx)

  @abc.abstractmethod
  def run(self, ctx: LoopContext) -> None:
    """The action itself."""

  def close(self) -> None:
    """Flushes anything pending; called once when the loop ends."""
