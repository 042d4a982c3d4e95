"""`python -m jaxtrain.sweep [overrides...]`: an Optuna study over jaxtrain runs.

    python -m jaxtrain.sweep                                   # the default space: optim.lr, optim.weight_decay
    python -m jaxtrain.sweep sweep.n_trials=20 sweep.n_jobs=2 trainer.steps=500
    python -m jaxtrain.sweep sweep.dir=outputs/sweeps/mine     # killed? the same command continues it

Overrides are jaxtrain's own; `sweep.*` configure the study (configs/sweep/default.yaml).
Each trial is a run in `<sweep dir>/trial_<k>`; `sweep.n_jobs` worker processes pull trials
from one storage, which other machines may join (`sweep.storage=<database URL>`, same
`sweep.study_name`). A restarted sweep resumes trials whose worker died from their
checkpoints, and ends when `sweep.n_trials` trials have finished (complete or pruned).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from jaxtrain.errors import ConfigError
from jaxtrain.preemption import Preempted
from jaxtrain.track import rundir

if TYPE_CHECKING:  # the heavy imports wait until a sweep really runs
  import optuna

  from jaxtrain.sweeps.study import SweepPlan

log = logging.getLogger("jaxtrain")

SWEEPS_SUBDIR = "sweeps"
# XLA:CPU flags for one compute thread per process.
SINGLE_THREADED_CPU = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def plan_sweep(overrides: Sequence[str]) -> SweepPlan:
  """The checked SweepPlan for a command line; raises ConfigError."""
  import jaxtrain
  from jaxtrain.config.validate import validate
  from jaxtrain.sweeps import space
  from jaxtrain.sweeps.study import SweepPlan, check_sweep, default_storage_url

  # A search space given on the command line brings new keys (its overrides' names), which
  # Hydra's struct mode accepts only with the force-add prefix.
  overrides = [f"++{o}" if o.startswith("sweep.params=") else o for o in overrides]
  spec = validate(jaxtrain.compose(overrides))
  sweep = spec.config.sweep
  sweep = dataclasses.replace(sweep, params=sweep.params or sweep.default_params)
  check_sweep(sweep)
  run_overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").partition(".")[0] != "sweep"]
  # Every key of the space (and every choice) must be an override jaxtrain accepts: check before any trial.
  for point in space.check_points(sweep.params):
    jaxtrain.compose(space.merge_overrides(sweep.trial_overrides, run_overrides, space.as_overrides(point)))
  sweep_dir = Path(sweep.dir or Path(spec.config.run.root) / SWEEPS_SUBDIR
                   / f"sweep_{rundir.timestamp()}_{rundir.safe_name(spec.config.run.name)}")
  return SweepPlan(sweep=sweep, sweep_dir=str(sweep_dir), storage_url=sweep.storage or default_storage_url(sweep_dir),
                   study_name=sweep.study_name or sweep_dir.name, overrides=tuple(run_overrides))


def run_sweep(plan: SweepPlan) -> optuna.Study:
  """Runs (or continues) the study to sweep.n_trials finished trials; returns it."""
  from jaxtrain.sweeps import study as study_lib

  study_lib.quiet_optuna()
  Path(plan.sweep_dir).mkdir(parents=True, exist_ok=True)
  # A worker that dies while others run counts as running until a trial start notices its
  # silent heartbeat; if none starts, its trial is failed and retried in the next round.
  for _ in range(3):
    study_lib.fail_dead_trials(plan)
    study = study_lib.load_study(plan)
    todo = plan.sweep.n_trials - study_lib.budget_used(study)
    if todo <= 0:
      break
    workers = min(plan.sweep.n_jobs, todo)
    log.info("sweep: %d trial(s) to go on %d worker(s); study %s in %s (continue it with sweep.dir=%s)", todo,
             workers, plan.study_name, plan.storage_url, plan.sweep_dir)
    if workers == 1:
      study_lib.worker(plan)
    else:
      _run_workers(plan, workers)
  return study_lib.load_study(plan)


def _run_workers(plan: SweepPlan, count: int) -> None:
  """`count` spawned worker processes (fresh interpreters: JAX and fork do not mix)."""
  context = multiprocessing.get_context("spawn")
  # On CPUs the workers share the cores: each computes on one thread instead
  # of every worker's XLA thread pool spanning all of them.
  import jax  # the command's own process already imported it for the study

  cpu_only = jax.default_backend() == "cpu"
  processes = [context.Process(target=_worker_process, args=(plan, index, cpu_only), name=f"sweep-worker-{index}")
               for index in range(count)]
  for process in processes:
    process.start()
  for process in processes:
    process.join()
  if any(p.exitcode == ConfigError.exit_code for p in processes):
    raise ConfigError("a sweep worker stopped on bad input (its message is above)")
  if any(p.exitcode == Preempted.exit_code for p in processes):
    raise Preempted("a signal to a worker", -1)
  failed = [f"{p.name} (exit {p.exitcode})" for p in processes if p.exitcode != 0]
  if failed:
    raise RuntimeError(f"sweep workers failed: {', '.join(failed)}; see their messages above")


def _worker_process(plan: SweepPlan, index: int, single_threaded_cpu: bool = False) -> None:
  """A spawned worker: bad input ends it with one line and exit 2, like the command."""
  if single_threaded_cpu:  # before this process's first computation, when XLA reads its flags
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREADED_CPU}".strip()
  from jaxtrain.sweeps.study import worker

  try:
    worker(plan, index)
  except ConfigError as err:
    print(f"jaxtrain: error: {err}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)
  except Preempted as err:
    print(f"jaxtrain: stopped: {err}", file=sys.stderr)
    sys.exit(Preempted.exit_code)


def report(study: optuna.Study, plan: SweepPlan) -> None:
  """The table, the best overrides line, trials.json and the figures."""
  from jaxtrain.sweeps import report as report_lib

  sweep_dir = Path(plan.sweep_dir)
  report_lib.print_table(study, plan.sweep.metric)
  best = report_lib.best_overrides(study)
  if best is not None:
    print(f"best trial {study.best_trial.number}: {plan.sweep.metric}={study.best_value:.6g}")
    print(f"best overrides: {best}")
  report_lib.write_results(study, sweep_dir)
  figures = report_lib.write_figures(study, sweep_dir)
  print(f"sweep directory: {sweep_dir}" + (f" (figures: {', '.join(p.name for p in figures)})" if figures else ""))


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point: plan, run or continue the study, report; one line and exit 2 for bad input."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    plan = plan_sweep(argv)
    print(f"sweep directory: {plan.sweep_dir} (add sweep.dir={plan.sweep_dir} to continue it after a stop)",
          flush=True)
    study = run_sweep(plan)
  except ConfigError as err:
    print(f"jaxtrain: error: {err}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)
  except Preempted as err:
    # The trial's run saved a checkpoint and is queued again: the same command continues it.
    print(f"jaxtrain: stopped: {err}; the same command with sweep.dir={plan.sweep_dir} continues the sweep",
          file=sys.stderr)
    sys.exit(Preempted.exit_code)
  report(study, plan)


if __name__ == "__main__":  # spawned workers import this module too: only the command runs main
  main()
