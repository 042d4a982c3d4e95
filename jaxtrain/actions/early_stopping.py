"""Early stopping on a monitored eval metric."""

from __future__ import annotations

import logging
import math
from typing import Any

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.config.schema import EarlyStoppingConfig

log = logging.getLogger(__name__)


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
  """Whether `value` beats `best` by more than `min_delta` in direction `mode`."""
  if best is None or math.isnan(best):
    return not math.isnan(value)
  return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(PeriodicAction):
  """Requests a stop after `patience` evaluations without improvement.

  Runs on the evaluation's schedule, after it; its counters live in the
  bookkeeping so that a resumed run continues counting where it stopped.
  """

  def __init__(self, cfg: EarlyStoppingConfig, **trigger: Any):
    super().__init__(**trigger)
    self.cfg = cfg

  def run(self, ctx: LoopContext) -> None:
    book = ctx.book
    if book.last_eval_step != ctx.step or self.cfg.monitor not in book.last_eval:
      return
    value = book.last_eval[self.cfg.monitor]
    if improved(value, book.early_stopping_best, self.cfg.mode, self.cfg.min_delta):
      book.early_stopping_best = value
      book.early_stopping_bad_evals = 0
    else:
      book.early_stopping_bad_evals += 1
    if book.early_stopping_bad_evals >= self.cfg.patience and not ctx.final:
      book.stop_reason = (f"early stopping: {self.cfg.monitor} did not improve for "
                          f"{self.cfg.patience} evaluations (best {book.early_stopping_best:.6g})")
      log.info(book.stop_reason)
      ctx.stop_requested = True
