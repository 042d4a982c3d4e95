"""The standard set of periodic actions, in the order they run after each step."""

from __future__ import annotations

from typing import Any

import jax

from jaxtrain.actions.base import PeriodicAction
from jaxtrain.actions.checkpointing import SaveCheckpoint
from jaxtrain.actions.early_stopping import EarlyStopping
from jaxtrain.actions.evaluation import make_evaluate
from jaxtrain.actions.heartbeat import BeatWhileTraining, Heartbeat
from jaxtrain.actions.logging import EpochEnd, LiveStats, LogTrainMetrics, StopOnBadUpdates, step_throughput
from jaxtrain.actions.mining import UpdateMiningTable
from jaxtrain.actions.progress import make_progress
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.faults import fault_from_env
from jaxtrain.track.events import EventWriter
from jaxtrain.track.scalars import ScalarWriter


def standard_actions(cfg: Any, engine: Any, events: EventWriter, scalars: ScalarWriter,
                     checkpointer: Checkpointer, heartbeat: Heartbeat, start_step: int) -> list[PeriodicAction]:
  """epoch end · evaluate · early stop · checkpoint · log · bad-update stop · heartbeat · progress · figures · fault.

  Order matters: evaluation first so that early stopping and the checkpoint
  see this step's metrics; the checkpoint before logging, which syncs its
  pending row on checkpoint steps; an injected fault last, so that at a
  checkpoint step it strikes while the async save is in flight.
  """
  live = LiveStats(step=start_step)
  ckpt_every = cfg.checkpoint.every
  # Each evaluator on its own schedule (eval.evaluators); checkpoint steps included for the monitored one.
  evaluate = make_evaluate(cfg, engine, events, scalars, heartbeat)
  actions: list[PeriodicAction] = [EpochEnd(events, live, engine.steps_per_epoch), evaluate]
  if engine.mining_table is not None:
    # First: it takes the per-example losses out of the train metrics before anything reads them.
    actions.insert(0, UpdateMiningTable(engine.mining_table))
  if cfg.trainer.early_stopping.enabled:
    actions.append(EarlyStopping(cfg.trainer.early_stopping, every_steps=evaluate.every_steps))
  actions.append(SaveCheckpoint(checkpointer, events, cfg.checkpoint.monitor, cfg.checkpoint.mode,
                                heartbeat=heartbeat, every_steps=ckpt_every))
  actions.append(LogTrainMetrics(scalars, live, log_every=cfg.trainer.log_every, sync_every=ckpt_every,
                                 throughput=step_throughput(cfg, engine)))
  if cfg.trainer.max_bad_steps:
    actions.append(StopOnBadUpdates(live, cfg.trainer.max_bad_steps, every_steps=cfg.trainer.log_every))
  actions.append(BeatWhileTraining(heartbeat, every_secs=cfg.trainer.heartbeat_secs))
  if jax.process_index() == 0:
    progress = make_progress(cfg.logging.progress, engine.total_steps, start_step, live,
                             cfg.logging.print_every_secs)
    if progress is not None:
      actions.append(progress)
  if cfg.logging.save_artifacts and any(family.enabled for family in vars(cfg.logging.families).values()):
    # Imported only when drawing: matplotlib costs about a second of start-up.
    from jaxtrain.actions.plots import MakeFigures

    # After the logger, whose last row the `end` curves wait for.
    actions.append(MakeFigures(cfg.logging, engine, scalars.path, eval_every=evaluate.every_steps,
                               seed=cfg.trainer.seed))
  fault = fault_from_env()
  if fault is not None:
    actions.append(fault)
  return actions
