"""Evaluation on the validation split."""

from __future__ import annotations

import time
from typing import Any, Callable

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.actions.heartbeat import Heartbeat
from jaxtrain.track.events import EventWriter
from jaxtrain.track.scalars import ScalarWriter

# state -> {"loss": ..., metric: ...}, exact means over the split (host floats)
EvalFn = Callable[[Any], dict[str, float]]


class Evaluate(PeriodicAction):
  """Runs `eval_fn` and records the results as `val/<metric>` in the bookkeeping,
  the events and scalars.csv. Later actions (early stopping, checkpoint) read
  them from `ctx.book.last_eval`."""

  def __init__(self, eval_fn: EvalFn, events: EventWriter, scalars: ScalarWriter, split: str = "val",
               heartbeat: Heartbeat | None = None, **trigger: Any):
    super().__init__(**trigger)
    self.heartbeat = heartbeat
    self.eval_fn = eval_fn
    self.events = events
    self.scalars = scalars
    self.split = split
    self.seconds = 0.0

  def run(self, ctx: LoopContext) -> None:
    if self.heartbeat is not None:
      self.heartbeat.mark(ctx.step, "evaluating")
    start = time.perf_counter()
    evaluated = {self.split: self.eval_fn(ctx.state)}
    if getattr(ctx.state, "ema_params", None) is not None:
      # The EMA weights are evaluated alongside as split "<split>_ema".
      evaluated[f"{self.split}_ema"] = self.eval_fn(ctx.state.replace(params=ctx.state.ema_params))
    self.seconds += time.perf_counter() - start
    ctx.book.last_eval = {f"{split}/{k}": float(v) for split, results in evaluated.items()
                          for k, v in results.items()}
    ctx.book.last_eval_step = ctx.step
    self.events.write("on_eval", step=ctx.step, epoch=round(ctx.epoch, 4), split=self.split,
                      metrics=ctx.book.last_eval)
    for split, results in evaluated.items():
      self.scalars.write({"step": ctx.step, "epoch": round(ctx.epoch, 4), "split": split,
                          **{k: v for k, v in results.items() if k in self.scalars.columns}})
