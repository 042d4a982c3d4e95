"""Progress display: a rich bar on a terminal, rate-limited plain lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.actions.logging import LiveStats

log = logging.getLogger("jaxtrain")
MODES = ("auto", "bar", "plain", "none")


def _describe(live: LiveStats) -> str:
  loss = f"loss {live.loss:.4g}" if live.loss is not None else "loss -"
  rate = f"{live.steps_per_sec:.1f} steps/s" if live.steps_per_sec else "- steps/s"
  return f"{loss}  {rate}"


class ProgressBar(PeriodicAction):
  """rich progress bar: step/total, elapsed, ETA, loss and steps/s (from LiveStats)."""

  def __init__(self, total_steps: int, start_step: int, live: LiveStats, **trigger: Any):
    # Imported here: rich costs ~50 ms of start-up, and runs without a terminal never draw a bar.
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    super().__init__(**trigger)
    self.live = live
    self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                             transient=False)
    self.task_id = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")
    self._started = False  # drawn from the loop's first round on, not while the steps compile

  def run(self, ctx: LoopContext) -> None:
    if not self._started:
      self.progress.start()
      self._started = True
    self.progress.update(self.task_id, completed=ctx.step, stats=_describe(self.live))

  def close(self) -> None:
    if not self._started:
      return
    # In a Jupyter kernel rich draws the bar in a widget and stop() does not redraw it,
    # so without this refresh the notebook keeps the last timed redraw (say 175/200).
    self.progress.refresh()
    self.progress.stop()


class ProgressLines(PeriodicAction):
  """One plain log line at most every `every_secs` (log files must not fill with redraws)."""

  def __init__(self, total_steps: int, live: LiveStats, **trigger: Any):
    super().__init__(**trigger)
    self.total = total_steps
    self.live = live

  def run(self, ctx: LoopContext) -> None:
    log.info("step %d/%d (%.0f%%) epoch %.2f  %s", ctx.step, self.total, 100.0 * ctx.step / self.total,
             ctx.epoch, _describe(self.live))


def make_progress(mode: str, total_steps: int, start_step: int, live: LiveStats,
                  print_every_secs: float) -> PeriodicAction | None:
  """The display for `logging.progress`: auto picks the bar only on a terminal."""
  if mode not in MODES:
    raise ValueError(f"logging.progress={mode!r}: choose one of {', '.join(MODES)}")
  if mode == "auto":
    mode = "bar" if sys.stdout.isatty() else "plain"
  if mode == "bar":
    return ProgressBar(total_steps, start_step, live, every_secs=0.2)
  if mode == "plain":
    return ProgressLines(total_steps, live, every_secs=print_every_secs)
  return None
