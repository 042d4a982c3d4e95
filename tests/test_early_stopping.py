"""Early stopping: stops before trainer.steps with a stop_reason; the `improved` rule itself."""

import math

import pytest

import jaxtrain
from jaxtrain.actions.early_stopping import improved

from _helpers import events_named, read_summary, short_overrides


def test_early_stopping_stops_the_run(tmp_path):
  run_dir = tmp_path / "run"
  # min_delta is huge, so no evaluation after the first counts as an improvement.
  jaxtrain.run(jaxtrain.compose(short_overrides(run_dir, 40, "trainer.eval_every=5") + [
      "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=1",
      "trainer.early_stopping.min_delta=1e6", "trainer.early_stopping.monitor=val/loss"]))
  summary = read_summary(run_dir)
  assert summary["final_step"] == 10 < summary["total_steps"] == 40
  assert summary["stop_reason"] and "early stopping" in summary["stop_reason"]
  assert "val/loss" in summary["stop_reason"]
  end = events_named(run_dir, "on_train_end")[-1]
  assert end["step"] == 10 and end["stop_reason"] == summary["stop_reason"]
  assert [e["step"] for e in events_named(run_dir, "on_eval")] == [5, 10]
  # The stopped run is checkpointed at its last step (resumable, not lost).
  assert events_named(run_dir, "on_checkpoint")[-1]["step"] == 10


def test_without_early_stopping_the_run_goes_on(reference_run):
  summary = read_summary(reference_run.run_dir)
  assert summary["stop_reason"] is None and summary["final_step"] == 40


def test_bad_monitor_is_a_config_error(tmp_path):
  from jaxtrain.errors import ConfigError

  with pytest.raises(ConfigError, match="val/accuracy.*val/loss"):
    jaxtrain.run(jaxtrain.compose(short_overrides(tmp_path / "run", 10) + [
        "trainer.early_stopping.enabled=true", "trainer.early_stopping.monitor=val/accuracy"]))


@pytest.mark.parametrize("value,best,mode,min_delta,expected", [
    (1.0, None, "min", 0.0, True),
    (1.0, None, "max", 0.0, True),
    (math.nan, None, "min", 0.0, False),
    (1.0, math.nan, "min", 0.0, True),
    (0.9, 1.0, "min", 0.0, True),
    (1.0, 1.0, "min", 0.0, False),  # equal is not better
    (1.1, 1.0, "min", 0.0, False),
    (0.95, 1.0, "min", 0.1, False),  # better, but not by min_delta
    (0.85, 1.0, "min", 0.1, True),
    (1.1, 1.0, "max", 0.0, True),
    (0.9, 1.0, "max", 0.0, False),
    (1.05, 1.0, "max", 0.1, False),
    (1.2, 1.0, "max", 0.1, True),
    (math.nan, 1.0, "min", 0.0, False),
    (math.nan, 1.0, "max", 0.0, False),
])
def test_improved(value, best, mode, min_delta, expected):
  assert improved(value, best, mode, min_delta) is expected
