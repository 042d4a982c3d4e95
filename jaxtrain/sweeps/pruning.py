"""Reports a trial's metric at every evaluation and stops its run when Optuna's pruner says so."""

from __future__ import annotations

import logging
import math
import warnings

import optuna

from jaxtrain.actions.base import LoopContext, PeriodicAction

log = logging.getLogger("jaxtrain")


class ReportAndPrune(PeriodicAction):
  """`trial.report(value, step)` after each evaluation; a stop request when `trial.should_prune()`.

  Offered every step and acting only on steps that evaluated, so it follows any
  evaluation schedule. Like early stopping, it ends the loop through the loop's own
  stop request (checkpoint and summary as usual); the caller then raises
  optuna.TrialPruned, which Optuna records as the trial's end.
  """

  step_exact = False  # it follows the evaluations, which land on their own steps

  def __init__(self, trial: optuna.Trial, metric: str):
    super().__init__(every_steps=1, at_end=True)
    self.trial = trial
    self.metric = metric
    self.pruned_at: int | None = None

  def run(self, ctx: LoopContext) -> None:
    book = ctx.book
    if book.last_eval_step != ctx.step or self.metric not in book.last_eval:
      return
    value = book.last_eval[self.metric]
    if not math.isfinite(value):
      return  # Optuna would reject it; the guard and the final value speak for such a run
    with warnings.catch_warnings():
      # A resumed trial evaluates again at its checkpoint's step, which it reported before it died.
      warnings.filterwarnings("ignore", message="The reported value is ignored")
      self.trial.report(value, ctx.step)
    if not ctx.final and self.trial.should_prune():
      self.pruned_at = ctx.step
      book.stop_reason = f"pruned by the sweep at step {ctx.step} ({self.metric}={value:.6g})"
      log.info("trial %d: %s", self.trial.number, book.stop_reason)
      ctx.stop_requested = True
