"""`python -m jaxtrain.evaluate`: a standalone evaluation of a checkpoint reproduces what the run
logged at that step; evaluators on their own schedules; one-line errors with exit code 2."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

import jaxtrain
from _helpers import checkpoint_steps, cli_env, events_named, read_summary, short_overrides
from jaxtrain.evaluate import evaluate_run, main
from jaxtrain.track.scalars import read_scalars


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """60 classifier steps, metrics every 20 steps, recall@K only once training ends, checkpoints at 20/40/60
  ranked by val/accuracy, and early stopping watching recall@1 (it never triggers: patience 100)."""
  run_dir = tmp_path_factory.mktemp("evaluate") / "run"
  jaxtrain.run(jaxtrain.compose(short_overrides(
      run_dir, 60, "task=classifier", "checkpoint.keep=5", "checkpoint.monitor=val/accuracy", "checkpoint.mode=max",
      "eval.evaluators=[{name:metrics},{name:recall_at_k,k:[1,3],every:0}]",
      "trainer.early_stopping.enabled=true", "trainer.early_stopping.monitor=val/recall@1",
      "trainer.early_stopping.mode=max", "trainer.early_stopping.patience=100")))
  return run_dir


def _logged_at(run_dir, step):
  """Everything the run's on_eval events recorded for `step`."""
  merged = {}
  for event in events_named(run_dir, "on_eval"):
    if event["step"] == step:
      merged.update(event["metrics"])
  return merged


def _assert_same(actual, expected):
  assert actual.keys() == expected.keys()
  for name, value in expected.items():
    assert math.isclose(actual[name], value, rel_tol=1e-6), (name, actual[name], value)


def test_each_evaluator_runs_on_its_schedule(run_dir):
  assert checkpoint_steps(run_dir) == {20, 40, 60}
  evals = [(e["step"], e["evaluators"]) for e in events_named(run_dir, "on_eval")]
  assert evals == [(20, ["metrics"]), (40, ["metrics"]), (60, ["metrics"]), (60, ["recall_at_k"])]
  final = read_summary(run_dir)["final_metrics"]
  assert set(final) == {"val/loss", "val/accuracy", "val/top3_accuracy", "val/recall@1", "val/recall@3"}
  assert final == _logged_at(run_dir, 60)
  rows = [r for r in read_scalars(run_dir / "facts" / "scalars.csv") if r["split"] == "val"]
  assert [r["recall@1"] != "" for r in rows] == [False, False, False, True]


def test_standalone_evaluation_reproduces_the_logged_metrics(run_dir):
  for step in ("20", "last"):
    evaluation = evaluate_run(run_dir, step=step)
    logged = _logged_at(run_dir, evaluation.step)
    _assert_same({k: v for k, v in evaluation.metrics.items() if k in logged}, logged)
    record = json.loads((run_dir / "evaluations" / f"step_{evaluation.step}.json").read_text())
    assert record["step"] == evaluation.step and record["metrics"] == evaluation.metrics
  assert evaluation.step == 60


def test_overrides_choose_other_evaluators(run_dir):
  evaluation = evaluate_run(run_dir, step="20", overrides=["eval.evaluators=[{name:recall_at_k,k:[1,10]}]"])
  assert set(evaluation.metrics) == {"val/recall@1", "val/recall@10"}
  assert evaluation.metrics["val/recall@10"] >= evaluation.metrics["val/recall@1"]


def test_cli_best_step_prints_a_table_and_writes_the_record(run_dir):
  best = read_summary(run_dir)["best_step"]
  proc = subprocess.run([sys.executable, "-m", "jaxtrain.evaluate", str(run_dir), "--step", "best"],
                        env=cli_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "val/accuracy" in proc.stdout and f"step {best}" in proc.stdout
  record = json.loads((run_dir / "evaluations" / f"step_{best}.json").read_text())
  _assert_same({k: v for k, v in record["metrics"].items() if k in _logged_at(run_dir, best)},
               _logged_at(run_dir, best))


@pytest.mark.parametrize("args, message", [
    (["{missing}"], r"not a run directory \(no .hydra/config.yaml\)"),
    (["{run}", "--step", "7"], r"--step=7: no such checkpoint in .*; checkpoints: \[20, 40, 60\]"),
    (["{run}", "--step", "first"], r"--step='first': expected a step number, best or last"),
    (["{run}", "model/encoder=conv"], r"model/encoder=conv: only key=value overrides"),
])
def test_bad_arguments_exit_2_with_one_line(run_dir, tmp_path, capsys, args, message):
  args = [a.format(missing=tmp_path / "nothing", run=run_dir) for a in args]
  with pytest.raises(SystemExit) as exit_info:
    main(args)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("jaxtrain.evaluate: error: ")
  assert re.search(message, err), err
