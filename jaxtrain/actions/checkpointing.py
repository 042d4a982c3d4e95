"""Periodic checkpoints with best-metric tracking."""

from __future__ import annotations

import math
import time
from typing import Any

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.actions.early_stopping import improved
from jaxtrain.actions.heartbeat import Heartbeat
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.track.events import EventWriter


class SaveCheckpoint(PeriodicAction):
  """Saves state, data iterator and bookkeeping together (async).

  Runs after the evaluation of the same step, so the checkpoint carries fresh
  metrics for best-checkpoint retention. The best step is tracked here as
  well, in the bookkeeping, rather than inferred from what Orbax kept.
  """

  runs_on_preemption = True

  def __init__(self, checkpointer: Checkpointer, events: EventWriter, monitor: str | None, mode: str,
               heartbeat: Heartbeat | None = None, **trigger: Any):
    super().__init__(**trigger)
    self.heartbeat = heartbeat
    self.checkpointer = checkpointer
    self.events = events
    self.monitor = monitor
    self.mode = mode
    self.blocking_seconds = 0.0

  def run(self, ctx: LoopContext) -> None:
    book = ctx.book
    metrics = None
    if self.monitor and book.last_eval_step == ctx.step and self.monitor in book.last_eval:
      value = book.last_eval[self.monitor]
      if not math.isnan(value):
        metrics = {self.monitor: value}
        if improved(value, book.best_value, self.mode):
          book.best_value, book.best_step = value, ctx.step
    if self.heartbeat is not None:
      self.heartbeat.mark(ctx.step, "checkpointing")
    start = time.perf_counter()
    saved = self.checkpointer.save(ctx.step, ctx.state, ctx.data_iterator, book.to_json(), metrics=metrics)
    self.blocking_seconds += time.perf_counter() - start
    if saved:
      self.events.write("on_checkpoint", step=ctx.step, epoch=round(ctx.epoch, 4), metrics=metrics,
                        best_step=book.best_step)
