"""The study and its workers: storage with heartbeats, pruner, the objective (a jaxtrain run), the trial budget.

A trial is a jaxtrain run in `<sweep dir>/trial_<k>`. Every running trial beats a
heartbeat in the storage; a trial whose worker died (SIGKILL, a lost node) goes
silent, Optuna marks it failed and `RetryHeartbeatStaleTrialCallback` queues a copy
with the same params. The copy runs in the original trial's directory, so
`run.resume=auto` continues it from its newest checkpoint instead of step 0.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from jaxtrain.config.schema import SweepConfig
from jaxtrain.errors import ConfigError, TrainingDiverged
from jaxtrain.preemption import Preempted
from jaxtrain.sweeps import space
from jaxtrain.sweeps.pruning import ReportAndPrune

log = logging.getLogger("jaxtrain")

PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("minimize", "maximize")
# Trials that use up the budget: finished ones and running ones. Queued (WAITING) trials are
# not counted: they are simply the next ones to run (enqueued by hand, or retries of dead ones).
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

# The heartbeat, retry and figure APIs are marked experimental; that note is for Optuna's users, not ours.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"jaxtrain\.sweeps")


@dataclasses.dataclass(frozen=True)
class SweepPlan:
  """Everything a worker process needs (picklable: workers are spawned)."""

  sweep: SweepConfig
  sweep_dir: str
  storage_url: str
  study_name: str
  # The command line's overrides, applied to every trial after sweep.trial_overrides.
  overrides: tuple[str, ...]


def check_sweep(sweep: SweepConfig) -> None:
  """Raises ConfigError for a bad `sweep.*` value."""
  if sweep.direction not in DIRECTIONS:
    raise ConfigError(f"sweep.direction={sweep.direction!r}: choose one of: {', '.join(DIRECTIONS)}")
  if sweep.pruner not in PRUNERS:
    raise ConfigError(f"sweep.pruner={sweep.pruner!r}: choose one of: {', '.join(PRUNERS)}")
  for key in ("n_trials", "n_jobs", "heartbeat_secs"):
    if getattr(sweep, key) < 1:
      raise ConfigError(f"sweep.{key}={getattr(sweep, key)}: must be at least 1")
  if sweep.grace_secs <= sweep.heartbeat_secs:
    raise ConfigError(f"sweep.grace_secs={sweep.grace_secs}: must exceed sweep.heartbeat_secs={sweep.heartbeat_secs}")
  space.check_space(sweep.params)


def default_storage_url(sweep_dir: Path) -> str:
  """SQLite next to the trials: heartbeats (and so resuming dead trials) need an RDB storage."""
  return f"sqlite:///{sweep_dir.absolute() / 'study.db'}"


def open_storage(plan: SweepPlan) -> RDBStorage:
  """The study's storage with heartbeats, and a retry (same params, same run dir) for each stale trial."""
  sqlite = plan.storage_url.startswith("sqlite")
  # SQLite: the driver's own transaction handling off, so that every transaction can begin IMMEDIATE (below).
  engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else None
  try:
    storage = RDBStorage(plan.storage_url, engine_kwargs=engine_kwargs,
                         heartbeat_interval=plan.sweep.heartbeat_secs, grace_period=plan.sweep.grace_secs,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                             inherit_intermediate_values=True))
  except Exception as err:  # a bad URL or an unreachable database: the user's input
    raise ConfigError(f"sweep.storage={plan.storage_url!r}: cannot open ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''})") from None
  if sqlite:
    # SQLite ignores SELECT ... FOR UPDATE, so two workers could both take the same queued
    # (enqueued or retried) trial; a write lock from the start of each transaction serialises them.
    sqlalchemy.event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
  return storage


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
  if sweep.pruner == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials)
  if sweep.pruner == "hyperband":
    return optuna.pruners.HyperbandPruner()
  return optuna.pruners.NopPruner()


def load_study(plan: SweepPlan, sampler_seed: int | None = None) -> optuna.Study:
  """Creates the study, or joins it when it exists (a restarted sweep, another worker or machine)."""
  Path(plan.sweep_dir).mkdir(parents=True, exist_ok=True)  # home of the default SQLite file
  return optuna.create_study(storage=open_storage(plan), study_name=plan.study_name, load_if_exists=True,
                             direction=plan.sweep.direction, pruner=make_pruner(plan.sweep),
                             sampler=optuna.samplers.TPESampler(seed=sampler_seed))


def trial_dir(plan: SweepPlan, trial: optuna.trial.FrozenTrial) -> Path:
  """trial_<k>: k is the original trial's number for a retried one, so it resumes there."""
  original = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
  return Path(plan.sweep_dir) / f"trial_{trial.number if original is None else original}"


def objective(plan: SweepPlan, trial: optuna.Trial) -> float:
  """Trains one trial's config; its value is the metric's last evaluation."""
  import jaxtrain  # heavy; workers import it once

  values = space.suggest(trial, plan.sweep.params)
  # The retry's origin is a system attribute, which only the stored (frozen) trial shows.
  frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
  run_dir = trial_dir(plan, frozen)
  trial.set_user_attr("run_dir", str(run_dir))
  overrides = space.merge_overrides(plan.sweep.trial_overrides, plan.overrides, space.as_overrides(values),
                                    [f"run.dir={run_dir}", "run.resume=auto"])
  pruning = ReportAndPrune(trial, plan.sweep.metric)
  try:
    result = jaxtrain.run(jaxtrain.compose(overrides), extra_actions=[pruning])
  except TrainingDiverged as err:
    # Hyperparameters that blow up training are a verdict on the trial, not a crash of the sweep.
    raise optuna.TrialPruned(f"diverged: {err}") from None
  except Preempted:
    trial.set_user_attr("preempted", True)  # checkpointed: worker() queues it to continue
    raise
  if pruning.pruned_at is not None:
    raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at}")
  final = result.summary["final_metrics"]
  if plan.sweep.metric not in final:
    raise ConfigError(f"sweep.metric={plan.sweep.metric!r} is not a metric of the trials' runs; "
                      f"choose one of: {', '.join(sorted(final))}")
  return float(final[plan.sweep.metric])


def budget_used(study: optuna.Study) -> int:
  """Trials counted against sweep.n_trials (finished or running)."""
  return len(study.get_trials(deepcopy=False, states=BUDGET_STATES))


def worker(plan: SweepPlan, index: int = 0) -> None:
  """One worker: pulls trials from the shared storage until sweep.n_trials are finished or running."""
  quiet_optuna()
  study = load_study(plan)
  # Distinct sampler streams per worker and per restart, yet the same for the same sweep history.
  seed = int(np.random.SeedSequence([plan.sweep.seed, index, len(study.trials)]).generate_state(1)[0])
  study = load_study(plan, sampler_seed=seed)
  todo = plan.sweep.n_trials - budget_used(study)
  if todo <= 0:
    return
  # n_trials caps this worker; the callback stops it once all workers together reach the budget.
  budget = optuna.study.MaxTrialsCallback(plan.sweep.n_trials, states=BUDGET_STATES)
  try:
    study.optimize(lambda trial: objective(plan, trial), n_trials=todo, callbacks=[budget])
  except Preempted:
    retry_preempted(study)
    raise


def retry_preempted(study: optuna.Study) -> None:
  """Queues a retry (same params, same run dir) of each preempted trial that has none yet.

  Optuna records the trial as failed when its run stops on a signal; the run saved a
  checkpoint first, so the retry continues from there, as for a dead worker.
  """
  trials = study.get_trials(deepcopy=False)
  retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
  retry = RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
  for trial in trials:
    if trial.state == TrialState.FAIL and trial.user_attrs.get("preempted") and trial.number not in retried:
      retry(study, trial)


def fail_dead_trials(plan: SweepPlan) -> int:
  """Marks trials left RUNNING by dead workers as failed (queuing their retries); returns how many.

  A trial's heartbeat needs `grace_secs` of silence before Optuna calls it stale, so a
  restart waits that long once when it finds running trials. Trials of live workers
  elsewhere keep beating and stay RUNNING.
  """
  study = load_study(plan)
  running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
  if not running:
    return 0
  log.info("sweep: %d trial(s) marked running; waiting %d s to tell dead ones from live ones",
           len(running), plan.sweep.grace_secs)
  time.sleep(plan.sweep.grace_secs + 1)
  optuna.storages.fail_stale_trials(study)
  return len(running) - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def quiet_optuna() -> None:
  """Optuna's INFO lines (study loaded, each trial's end) are repeated by the final table."""
  optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
  """One row per trial: number, state, params, value, run dir, and the trial it retried."""
  rows = []
  for trial in study.get_trials(deepcopy=False):
    rows.append({"number": trial.number, "state": trial.state.name, "params": dict(trial.params),
                 "value": trial.value, "run_dir": trial.user_attrs.get("run_dir"),
                 "retry_of": RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)})
  return rows
