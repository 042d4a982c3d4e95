"""fit() reports the process's CPU time per step beside its wall time."""

from __future__ import annotations

import itertools
import time

from jaxtrain import loop


def _burn(seconds: float) -> None:
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def _fit(step):
  return loop.fit(0, step, itertools.repeat(None), [], start_step=0, total_steps=4, steps_per_epoch=4)


def _computing_step(state, batch):
  _burn(0.02)
  return state + 1, {}


def _waiting_step(state, batch):
  time.sleep(0.02)
  return state + 1, {}


def test_a_step_that_computes_shows_its_cpu_time():
  result = _fit(_computing_step)
  assert result.steps_run == 4
  assert result.cpu_ms_per_step >= 20.0
  assert result.loop_cpu_seconds <= result.loop_seconds * 2 + 0.05  # one busy thread, plus slack


def test_a_step_that_waits_costs_wall_time_but_little_cpu():
  result = _fit(_waiting_step)
  assert result.loop_seconds >= 0.08
  assert result.cpu_ms_per_step < 10.0
