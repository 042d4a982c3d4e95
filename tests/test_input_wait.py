"""The loop measures the time blocked on the data iterator; a run from a directory of NPZ datasets
reports it per logged interval (scalars.csv) and over the run (summary.json)."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import jaxtrain
from jaxtrain import loop
from jaxtrain.track.scalars import read_scalars

from _helpers import read_summary, short_overrides


class _FakeClock:
  """perf_counter that only moves when told to."""

  def __init__(self):
    self.now = 0.0

  def perf_counter(self) -> float:
    return self.now

  def as_time_module(self) -> types.SimpleNamespace:
    """What loop.py reads of the `time` module: this clock, and no CPU time spent."""
    return types.SimpleNamespace(perf_counter=self.perf_counter, process_time=lambda: 0.0)


def test_fit_counts_only_the_time_blocked_in_next(monkeypatch):
  clock = _FakeClock()
  monkeypatch.setattr(loop, "time", clock.as_time_module())

  def batches():
    while True:
      clock.now += 3.0  # the pipeline takes 3 s to produce a batch
      yield np.float32(1.0)

  def train_step(state, batch):
    clock.now += 1.0  # and the step 1 s
    return state + batch, {"loss": state}

  result = loop.fit(np.float32(0.0), train_step, batches(), [], start_step=0, total_steps=5, steps_per_epoch=5)
  assert result.steps_run == 5
  assert result.input_wait_seconds == pytest.approx(15.0)
  assert result.input_wait_fraction == pytest.approx(0.75)


def test_reading_while_the_previous_step_still_runs_is_not_waiting(monkeypatch):
  clock = _FakeClock()
  monkeypatch.setattr(loop, "time", clock.as_time_module())

  class Pending:
    """A step output the devices are still computing."""

    def is_ready(self) -> bool:
      return False

  def batches():
    while True:
      clock.now += 3.0
      yield np.float32(1.0)

  def train_step(state, batch):
    clock.now += 1.0
    return state + batch, {"loss": Pending()}

  result = loop.fit(np.float32(0.0), train_step, batches(), [], start_step=0, total_steps=5, steps_per_epoch=5,
                    max_in_flight=0)
  # Only the first read, before any step was dispatched, kept the devices idle.
  assert result.input_wait_seconds == pytest.approx(3.0)


@pytest.fixture(scope="module")
def dataset_dir_run(tmp_path_factory):
  """10 steps of task=ae on a directory of two NPZ datasets."""
  root = tmp_path_factory.mktemp("input_wait")
  rng = np.random.default_rng(0)
  for name, rows in (("session_a", 48), ("session_b", 40)):
    np.savez(root / f"{name}.npz", pixels=rng.uniform(size=(rows, 16)).astype(np.float32))
    (root / f"{name}.yaml").write_text(f"path: {name}.npz\nkeys: {{x: pixels}}\nval_fraction: 0.25\n")
  overrides = short_overrides(root / "run", 10, "task=ae", "data=dataset_dir", f"data.dataset_configs_path={root}",
                              "data.batch_size=16", "data.eval_batch_size=16", "trainer.log_every=5",
                              "model.latent_dim=4")
  result = jaxtrain.run(jaxtrain.compose(overrides))
  return result


def test_a_run_from_a_dataset_dir_trains_and_reports_input_wait(dataset_dir_run):
  summary = read_summary(dataset_dir_run.run_dir)
  assert summary["final_step"] == 10 and summary["train_step_compilations"] == 1
  assert math.isfinite(summary["final_metrics"]["val/mse"])
  assert 0.0 <= summary["input_wait_fraction"] <= 1.0
  train_rows = [r for r in read_scalars(dataset_dir_run.run_dir / "facts" / "scalars.csv") if r["split"] == "train"]
  assert [int(r["step"]) for r in train_rows] == [5, 10]
  assert all(0.0 <= float(r["input_wait_frac"]) <= 1.0 for r in train_rows)
