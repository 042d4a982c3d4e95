"""Evaluation on the validation split: the configured evaluators, each on its own schedule."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.actions.heartbeat import Heartbeat
from jaxtrain.track.events import EventWriter
from jaxtrain.track.scalars import ScalarWriter

# (state, evaluators) -> {metric: value}, host floats (Engine.evaluate)
EvalFn = Callable[[Any, Sequence[Any]], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Scheduled:
  """One evaluator and when it runs: at multiples of `every_steps`, and at the end if `at_end`."""

  evaluator: Any
  every_steps: tuple[int, ...]
  at_end: bool


def evaluate_with_ema(eval_fn: EvalFn, state: Any, evaluators: Sequence[Any], split: str = "val",
                      ) -> dict[str, float]:
  """`<split>/<metric>` for the state's params and, when it keeps an EMA, `<split>_ema/<metric>` for those."""
  evaluated = {split: eval_fn(state, evaluators)}
  if getattr(state, "ema_params", None) is not None:
    evaluated[f"{split}_ema"] = eval_fn(state.replace(params=state.ema_params), evaluators)
  return {f"{name}/{k}": float(v) for name, results in evaluated.items() for k, v in results.items()}


def schedule_evaluators(evaluators: Sequence[Any], eval_every: int, monitored: Sequence[str],
                        checkpoint_every: int | None) -> list[Scheduled]:
  """Each evaluator's steps: its `every` (null = trainer.eval_every, 0 = none), plus the checkpoint
  steps when it produces a monitored metric (`monitored`: bare metric names), so every checkpoint
  carries a fresh value of what ranks it."""
  scheduled = []
  for evaluator in evaluators:
    every = evaluator.config.every if evaluator.config.every is not None else eval_every
    steps = (every,) if every else ()
    if checkpoint_every and set(evaluator.declared_metrics) & set(monitored):
      steps += (checkpoint_every,)
    scheduled.append(Scheduled(evaluator, tuple(sorted(set(steps))), evaluator.config.at_end))
  return scheduled


def make_evaluate(cfg: Any, engine: Any, events: EventWriter, scalars: ScalarWriter,
                  heartbeat: Heartbeat | None = None) -> "Evaluate":
  """The run's Evaluate action: engine.evaluators on their schedules (see `schedule_evaluators`)."""
  monitor = cfg.checkpoint.monitor
  schedule = schedule_evaluators(engine.evaluators, cfg.trainer.eval_every,
                                 [monitor.partition("/")[2]] if monitor else [],
                                 cfg.checkpoint.every if monitor else None)
  return Evaluate(engine.evaluate, schedule, events, scalars, heartbeat=heartbeat)


class Evaluate(PeriodicAction):
  """Runs the due evaluators and records the results as `val/<metric>` in the bookkeeping,
  the events and scalars.csv. Later actions (early stopping, checkpoint) read them from
  `ctx.book.last_eval`, which holds exactly the metrics evaluated at `last_eval_step`."""

  def __init__(self, eval_fn: EvalFn, schedule: Sequence[Scheduled], events: EventWriter, scalars: ScalarWriter,
               split: str = "val", heartbeat: Heartbeat | None = None):
    every = sorted({n for s in schedule for n in s.every_steps})
    super().__init__(every_steps=every, at_end=any(s.at_end for s in schedule))
    self.schedule = list(schedule)
    self.heartbeat = heartbeat
    self.eval_fn = eval_fn
    self.events = events
    self.scalars = scalars
    self.split = split
    self.seconds = 0.0
    self.seconds_by_evaluator: dict[str, float] = {}
    self._ran_at: dict[int, int] = {}  # schedule index -> the last step it ran at

  def _due_now(self, step: int, final: bool, preempted: bool) -> list[int]:
    """Indices of the evaluators due at this step (the final round adds the at_end ones not yet run)."""
    due = []
    for i, s in enumerate(self.schedule):
      if self._ran_at.get(i) == step:
        continue
      if final:
        if s.at_end and not preempted:
          due.append(i)
      elif any(step % n == 0 for n in s.every_steps):
        due.append(i)
    return due

  def due(self, step: int, final: bool, preempted: bool = False) -> bool:
    return bool(self._due_now(step, final, preempted))

  def __call__(self, ctx: LoopContext) -> None:
    due = self._due_now(ctx.step, ctx.final, ctx.preempted)
    if due:
      self._evaluate(ctx, due)

  def run(self, ctx: LoopContext) -> None:
    self._evaluate(ctx, range(len(self.schedule)))

  def _evaluate(self, ctx: LoopContext, indices: Sequence[int]) -> None:
    if self.heartbeat is not None:
      self.heartbeat.mark(ctx.step, "evaluating")
    results: dict[str, float] = {}
    for i in indices:
      evaluator = self.schedule[i].evaluator
      start = time.perf_counter()
      results.update(evaluate_with_ema(self.eval_fn, ctx.state, [evaluator], self.split))
      seconds = time.perf_counter() - start
      self.seconds += seconds
      self.seconds_by_evaluator[evaluator.name] = self.seconds_by_evaluator.get(evaluator.name, 0.0) + seconds
      self._ran_at[i] = ctx.step
    # The final round may add evaluators to a step already evaluated: merge, never mix steps.
    book = ctx.book
    book.last_eval = {**book.last_eval, **results} if book.last_eval_step == ctx.step else results
    book.last_eval_step = ctx.step
    self.events.write("on_eval", step=ctx.step, epoch=round(ctx.epoch, 4), split=self.split,
                      evaluators=[self.schedule[i].evaluator.name for i in indices], metrics=results)
    by_split: dict[str, dict[str, float]] = {}
    for key, value in results.items():
      split, _, metric = key.partition("/")
      by_split.setdefault(split, {})[metric] = value
    for split, values in by_split.items():
      self.scalars.write({"step": ctx.step, "epoch": round(ctx.epoch, 4), "split": split,
                          **{k: v for k, v in values.items() if k in self.scalars.columns}})
