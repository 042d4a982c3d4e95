"""Hands each step's per-example losses to the mining table, and publishes the table on schedule."""

from __future__ import annotations

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.data.mining import INDEX_METRIC, LOSS_METRIC, MiningTable


class UpdateMiningTable(PeriodicAction):
  """Runs after every step, before the actions that read train metrics.

  It keeps references to the step's example ids and losses (still on the
  device; the table reads them only when it folds them in, long after they
  are computed, or when a checkpoint saves them) and takes them out of the
  train metrics, which the logger expects to be scalars. Every
  `table.every` steps it publishes the next version of the table.
  """

  def __init__(self, table: MiningTable):
    super().__init__(every_steps=1, at_end=False)
    self.table = table

  def run(self, ctx: LoopContext) -> None:
    metrics = ctx.train_metrics
    if metrics is None or LOSS_METRIC not in metrics:
      return
    self.table.record(ctx.step - 1, metrics[INDEX_METRIC], metrics[LOSS_METRIC])
    ctx.train_metrics = {k: v for k, v in metrics.items() if k not in (LOSS_METRIC, INDEX_METRIC)}
    self.table.publish(ctx.step)
