"""trainer.steps_per_call: several train steps per compiled call, the same training as one per call."""

import csv
import logging

import pytest

import jaxtrain
from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.errors import ConfigError
from jaxtrain.faults import FAULT_ENV, InjectedFault
from jaxtrain.loop import call_length, call_lengths

from _helpers import read_events, read_summary, short_overrides

# Columns that time the run rather than describe its training.
TIMING_COLUMNS = {"steps_per_sec", "epoch_time_s", "max_memory_mib", "input_wait_frac"}


class Every(PeriodicAction):
  def __init__(self, *, exact: bool = True, **trigger):
    super().__init__(**trigger)
    self.step_exact = exact
    self.ran_at: list[int] = []

  def run(self, ctx: LoopContext) -> None:
    self.ran_at.append(ctx.step)


def test_a_call_runs_several_steps_only_up_to_the_next_exact_step():
  actions = [Every(every_steps=25), Every(on_steps=(37,))]
  assert call_length(0, 100, 10, actions) == 10  # steps 1..10
  assert call_length(20, 100, 10, actions) == 1  # 25 lies inside 21..30
  assert call_length(25, 100, 10, actions) == 10  # 26..35 ends before 37
  assert call_length(30, 100, 10, actions) == 1  # 37
  assert call_length(95, 100, 10, actions) == 1  # past the end
  assert call_length(90, 100, 10, actions) == 10  # up to the end exactly
  assert call_length(20, 100, 1, actions) == 1
  # An action not bound to exact steps never shortens a call.
  assert call_length(0, 100, 10, [Every(every_steps=5, exact=False)]) == 10


def test_call_lengths_plans_the_executables_to_compile():
  aligned = [Every(every_steps=50), Every(every_steps=20)]
  assert call_lengths(0, 200, 10, aligned) == {10}
  assert call_lengths(0, 205, 10, aligned) == {1, 10}  # five single steps at the end
  assert call_lengths(33, 200, 10, aligned) == {1, 10}  # resumed between calls
  assert call_lengths(0, 7, 10, aligned) == {1}
  assert call_lengths(0, 200, 1, aligned) == {1}
  assert call_lengths(200, 200, 10, aligned) == set()
  # Every 15: ten steps to 10, five single steps to 15, ten to 25, ...
  assert call_lengths(0, 200, 10, [Every(every_steps=15)]) == {1, 10}
  # Every 7: no ten consecutive steps miss a multiple of 7, so single steps throughout.
  assert call_lengths(0, 200, 10, [Every(every_steps=7)]) == {1}


def test_an_action_not_bound_to_steps_runs_once_after_a_call_that_passed_its_step():
  loose = Every(every_steps=5, exact=False)
  ctx = LoopContext(step=10, total_steps=100, steps_per_epoch=5, state=None, train_metrics=None,
                    data_iterator=None, book=None, call_start=0)
  loose(ctx)
  ctx.call_start, ctx.step = 10, 13
  loose(ctx)  # 11..13 holds no multiple of 5
  ctx.call_start, ctx.step = 13, 15
  loose(ctx)
  assert loose.ran_at == [10, 15]


def _rows(run_dir):
  with (run_dir / "facts" / "scalars.csv").open() as f:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def _training_events(run_dir):
  return [{k: v for k, v in e.items() if k not in ("time", "epoch_time_s", "compile_seconds", "steps_per_sec",
                                                   "step_memory_mib")}
          for e in read_events(run_dir)]


def _run(run_dir, steps, *extra):
  return jaxtrain.run(jaxtrain.compose(short_overrides(run_dir, steps, "data.batch_size=64", *extra)))


def test_ten_steps_per_call_train_exactly_as_one(tmp_path):
  # Eval, log and checkpoint steps that are not multiples of ten: the run mixes single
  # steps and ten-step calls, and every action still runs at its own step.
  cadence = ["trainer.eval_every=15", "trainer.log_every=10", "checkpoint.every=30"]
  one = _run(tmp_path / "one", 53, "trainer.steps_per_call=1", *cadence)
  ten = _run(tmp_path / "ten", 53, "trainer.steps_per_call=10", *cadence)
  s1, s10 = read_summary(one.run_dir), read_summary(ten.run_dir)
  assert s10["params_fingerprint"] == s1["params_fingerprint"]
  assert s10["final_metrics"] == s1["final_metrics"]
  assert s1["train_step_compilations"] == 1 and s10["train_step_compilations"] == 2  # one step, ten steps
  assert _rows(ten.run_dir) == _rows(one.run_dir)
  # The same events at the same steps: evaluations, checkpoints and every epoch end.
  assert _training_events(ten.run_dir) == _training_events(one.run_dir)
  assert [e["step"] for e in read_events(ten.run_dir) if e["event"] == "on_eval"] == [15, 30, 45, 53]


def test_a_run_resumed_between_calls_continues_exactly(tmp_path, monkeypatch):
  cadence = ["trainer.eval_every=20", "checkpoint.every=20", "trainer.steps_per_call=10"]
  uninterrupted = _run(tmp_path / "whole", 60, "trainer.steps_per_call=1", "trainer.eval_every=20")
  monkeypatch.setenv(FAULT_ENV, "exception@33")
  with pytest.raises(InjectedFault):
    _run(tmp_path / "split", 60, *cadence)
  monkeypatch.delenv(FAULT_ENV)
  # The emergency checkpoint holds step 33: single steps to 40, then ten at a time.
  resumed = _run(tmp_path / "split", 60, "run.resume=auto", *cadence)
  assert read_summary(resumed.run_dir)["steps_this_session"] == 27
  assert read_summary(resumed.run_dir)["params_fingerprint"] == read_summary(uninterrupted.run_dir)["params_fingerprint"]


def test_cadences_that_leave_no_room_for_a_call_are_named(tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger="jaxtrain"):
    result = _run(tmp_path / "every7", 30, "trainer.steps_per_call=10", "trainer.log_every=7")
  assert read_summary(result.run_dir)["train_step_compilations"] == 1
  assert "trainer.steps_per_call=10: every call runs one step" in caplog.text


def test_mining_keeps_one_step_per_call(tmp_path):
  result = _run(tmp_path / "mined", 20, "trainer.steps_per_call=10", "data.mining.enabled=true",
                "data.mining.every=5")
  assert read_summary(result.run_dir)["final_step"] == 20


def test_steps_per_call_below_one_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="trainer.steps_per_call"):
    _run(tmp_path / "bad", 10, "trainer.steps_per_call=0")
