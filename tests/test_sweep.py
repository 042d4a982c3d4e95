"""`python -m jaxtrain.sweep`: the default space, pruning a bad trial, and a killed sweep that resumes its trial."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from _helpers import REPO, checkpoint_steps, cli_env, events_named, read_summary

from jaxtrain.errors import ConfigError
from jaxtrain.sweep import plan_sweep, report, run_sweep
from jaxtrain.sweeps.study import load_study, retry_preempted, trial_dir

# Tiny trials: a small MLP, 40 steps, an evaluation every 10 (what the pruner sees), a checkpoint every 10.
TRIAL = ["trainer.steps=40", "trainer.epochs=null", "trainer.log_every=10", "trainer.eval_every=10",
         "checkpoint.every=10", "logging.progress=none", "model.encoder.widths=[32]", "model.decoder.widths=[32]"]
GOOD = {"optim.lr": 3e-3}
BAD = {"optim.lr": 1e-7}  # barely moves: far behind at the first evaluation


def test_default_space_needs_no_arguments(tmp_path):
  plan = plan_sweep([f"sweep.dir={tmp_path}"])
  space = plan.sweep.params
  assert set(space) == {"optim.lr", "optim.weight_decay"}
  assert space["optim.lr"].log and space["optim.lr"].low < 1e-3 < space["optim.lr"].high
  assert plan.storage_url == f"sqlite:///{tmp_path.absolute() / 'study.db'}"
  # Without sweep.dir a new sweep goes under the env profile's output root.
  assert plan_sweep(["env.output_root=elsewhere"]).sweep_dir.startswith("elsewhere/sweeps/sweep_")
  assert plan.sweep.n_trials * 300 <= 3000 and "trainer.steps=300" in plan.sweep.trial_overrides
  # A space on the command line replaces the default one.
  plan = plan_sweep([f"sweep.dir={tmp_path}", "sweep.params={optim: {type: categorical, choices: [adam, sgd]}}"])
  assert list(plan.sweep.params) == ["optim"]


def test_bad_sweep_config_is_one_line(tmp_path):
  for override, message in [
      ("sweep.params={optim.lx: {low: 0.1, high: 0.2}}", "optim.lx: unknown key"),
      ("sweep.params={optim: {type: categorical, choices: [adam, adamx]}}", "optim=adamx: unknown option"),
      ("sweep.params={optim.lr: {low: 0, high: 1, log: true}}", "needs low > 0"),
      ("sweep.pruner=sometimes", "sweep.pruner='sometimes'")]:
    with pytest.raises(ConfigError, match=message):
      plan_sweep([f"sweep.dir={tmp_path}", override])


def test_median_pruner_stops_a_bad_trial(tmp_path, capsys):
  plan = plan_sweep([f"sweep.dir={tmp_path}", "sweep.params={optim.lr: {low: 1e-8, high: 1e-1, log: true}}",
                     "sweep.n_trials=2", "sweep.pruner=median", "sweep.pruner_startup_trials=1", *TRIAL,
                     "checkpoint.every=40"])
  study = load_study(plan)
  for params in (GOOD, BAD):
    study.enqueue_trial(params)
  study = run_sweep(plan)
  states = [t.state for t in study.trials]
  assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
  pruned = read_summary(tmp_path / "trial_1")
  assert pruned["final_step"] < 40 and pruned["stop_reason"].startswith("pruned by the sweep")

  report(study, plan)
  out = capsys.readouterr().out
  assert "best overrides: optim.lr=0.003\n" in out and "pruned" in out
  assert json.loads((tmp_path / "trials.json").read_text())["trials"][1]["state"] == "PRUNED"
  assert (tmp_path / "optimization_history.png").stat().st_size > 0


def test_killed_sweep_resumes_its_trial_from_the_checkpoint(tmp_path):
  overrides = [f"sweep.dir={tmp_path}", "sweep.n_trials=1", "sweep.pruner=none", "sweep.heartbeat_secs=1",
               "sweep.grace_secs=2", *TRIAL]
  # The worker dies by SIGKILL at step 25 of its first trial, after the checkpoint of step 20.
  killed = subprocess.run([sys.executable, "-m", "jaxtrain.sweep", *overrides], cwd=REPO,
                          env=cli_env(JAXTRAIN_FAULT="sigkill@25"), capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert checkpoint_steps(tmp_path / "trial_0")

  study = run_sweep(plan_sweep(overrides))  # the same command again, in this process
  by_state = {}
  for trial in study.trials:
    by_state.setdefault(trial.state, []).append(trial)
  assert len(by_state[optuna.trial.TrialState.COMPLETE]) == 1
  [dead] = by_state[optuna.trial.TrialState.FAIL]
  [retry] = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
  assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == dead.params
  assert retry.user_attrs["run_dir"] == str(tmp_path / "trial_0")
  starts = events_named(tmp_path / "trial_0", "on_start")
  assert starts[0]["step"] == 0 and starts[-1]["step"] > 0 and starts[-1]["resumed_from"]
  assert read_summary(tmp_path / "trial_0")["final_step"] == 40


def test_a_preempted_trial_is_queued_once_to_continue(tmp_path):
  # SIGTERM: the run checkpoints, Optuna records the trial as failed, the worker queues its retry.
  plan = plan_sweep([f"sweep.dir={tmp_path}"])
  study = load_study(plan)
  lr = optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)
  study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, params={"optim.lr": 1e-3},
                                      distributions={"optim.lr": lr}, user_attrs={"preempted": True}))
  retry_preempted(study)
  retry_preempted(study)  # a second stop before the retry ran queues nothing more
  [queued] = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
  assert queued.params == {"optim.lr": 1e-3} and queued.system_attrs["failed_trial"] == 0
  assert trial_dir(plan, queued) == tmp_path / "trial_0"


def test_report_figures_leave_matplotlib_as_they_found_it(tmp_path):
  """In a notebook the sweep's figures must not switch the kernel's inline backend to Agg (no later
  figure would show) nor leave Optuna's ggplot style behind."""
  import matplotlib

  from jaxtrain.sweeps.report import write_figures

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
  study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2 + trial.suggest_float("y", 0, 1), n_trials=4)
  before = matplotlib.get_backend()
  inline = "module://matplotlib_inline.backend_inline"
  matplotlib.use(inline)
  style = {key: matplotlib.rcParams[key] for key in ("axes.facecolor", "axes.grid", "axes.edgecolor")}
  try:
    written = write_figures(study, tmp_path)
    assert [p.name for p in written] == ["optimization_history.png", "param_importances.png"]
    assert matplotlib.get_backend() == inline
    assert {key: matplotlib.rcParams[key] for key in style} == style
  finally:
    matplotlib.use(before)
