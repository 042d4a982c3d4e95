"""A user task registered from its own module is selectable with task=<name>, from Python and the CLI."""

import csv

import pytest

import jaxtrain
from jaxtrain.tasks import task_names

from _helpers import TESTS, cli_env, events_named, read_summary, run_cli, short_overrides

PLUGIN = "plugin_tasks.toy_regression"
TASK_OVERRIDES = ["task=toy_regression", "schedule=constant", "optim=adam", "optim.lr=3e-3"]


def _val_losses(run_dir):
  return [e["metrics"]["val/loss"] for e in events_named(run_dir, "on_eval")]


def test_plugin_task_from_python(tmp_path):
  import plugin_tasks.toy_regression  # noqa: F401  (registers the task)

  assert "toy_regression" in task_names()
  cfg = jaxtrain.compose(short_overrides(tmp_path / "run", 60, "trainer.eval_every=10") + TASK_OVERRIDES +
                         ["task.hidden=16"])
  assert cfg.task.name == "toy_regression" and cfg.task.hidden == 16
  result = jaxtrain.run(cfg)
  losses = _val_losses(result.run_dir)
  assert len(losses) >= 3
  assert losses[-1] < 0.5 * losses[0], losses
  assert result.summary["final_metrics"]["val/mse"] == pytest.approx(losses[-1])
  with (result.run_dir / "facts" / "scalars.csv").open(newline="") as f:
    train = [float(r["loss"]) for r in csv.DictReader(f) if r["split"] == "train"]
  assert train[-1] < train[0]


@pytest.mark.slow
def test_plugin_task_from_cli(tmp_path):
  env = cli_env(JAXTRAIN_PLUGINS=PLUGIN, PYTHONPATH=str(TESTS))
  run_dir = tmp_path / "run"
  proc = run_cli(short_overrides(run_dir, 60, "trainer.eval_every=10") + TASK_OVERRIDES, cwd=tmp_path, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  losses = _val_losses(run_dir)
  assert losses[-1] < 0.5 * losses[0], losses
  assert read_summary(run_dir)["final_step"] == 60


def test_unknown_plugin_module_is_one_line_error(tmp_path):
  env = cli_env(JAXTRAIN_PLUGINS="no_such_plugin_module", PYTHONPATH=str(TESTS))
  proc = run_cli(["task=toy_regression"], cwd=tmp_path, env=env, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxtrain: error: JAXTRAIN_PLUGINS")
  assert "no_such_plugin_module" in lines[0]


def test_without_the_plugin_the_task_is_unknown(tmp_path):
  env = cli_env(PYTHONPATH=str(TESTS))
  env.pop("JAXTRAIN_PLUGINS", None)
  proc = run_cli(["task=toy_regression"], cwd=tmp_path, env=env, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "task=toy_regression" in lines[0] and "ae" in lines[0]
