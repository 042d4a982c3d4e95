"""heartbeat.json during and after a run; `python -m jaxtrain.average`; EMA evaluation.

One CLI run (EMA on, keep=2, a heartbeat every 0.2 s) serves all three.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxtrain.actions.heartbeat import read_heartbeat

from _helpers import cached_cli_env, cli_env, checkpoint_steps, read_summary, short_overrides

STEPS = 120


def _average_cli(*args: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "jaxtrain.average", *args], env=cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
  out, err = proc.communicate(timeout=300)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, compile_cache):
  base = tmp_path_factory.mktemp("hb")
  run_dir = base / "run"
  overrides = short_overrides(run_dir, STEPS, "checkpoint.every=20", "checkpoint.keep=2", "checkpoint.monitor=null",
                              "trainer.ema_decay=0.99", "trainer.heartbeat_secs=0.2")
  proc = subprocess.Popen([sys.executable, "-m", "jaxtrain.main", *overrides], cwd=base, env=cached_cli_env(compile_cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  seen = []
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline:
    beat = read_heartbeat(run_dir / "heartbeat.json")
    if beat is not None and (not seen or beat != seen[-1]):
      seen.append(beat)
    time.sleep(0.01)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err[-3000:]
  return run_dir, seen, time.time()


@pytest.mark.slow
def test_heartbeat_while_training_and_after(ema_run):
  run_dir, seen, finished_at = ema_run
  training = [b["step"] for b in seen if b["phase"] == "training"]
  assert len(set(training)) >= 2, seen
  assert training == sorted(training) and training[-1] > training[0]
  assert all(0 <= s <= STEPS for s in training)
  final = read_heartbeat(run_dir / "heartbeat.json")
  assert final["phase"] == "finished" and final["step"] == STEPS
  assert finished_at - 120 < final["time"] <= finished_at + 1
  assert seen[-1]["phase"] == "finished" or seen[-1]["time"] <= final["time"]


@pytest.mark.slow
def test_average_last_two_checkpoints(ema_run):
  run_dir, _, _ = ema_run
  steps = sorted(checkpoint_steps(run_dir))
  assert steps == [STEPS - 20, STEPS]  # keep=2
  # Both CLI calls at once.
  proc, too_many = _average_cli(str(run_dir), "--last", "2"), _average_cli(str(run_dir), "--last", "5")
  proc, too_many = _finish(proc), _finish(too_many)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = Path(proc.stdout.strip().splitlines()[-1])
  assert out == run_dir / "exports" / "average_last2"
  assert json.loads((out / "averaged.json").read_text())["steps"] == steps

  checkpointer = ocp.StandardCheckpointer()
  states = [checkpointer.restore(run_dir / "checkpoints" / str(s) / "state") for s in steps]
  export = checkpointer.restore(out / "model")
  for key in ("params", "ema_params"):
    want = jax.tree.map(lambda a, b: (np.asarray(a, np.float64) + np.asarray(b, np.float64)) / 2,
                        states[0][key], states[1][key])
    assert jax.tree.structure(export[key]) == jax.tree.structure(want)
    for got, expected, first in zip(jax.tree.leaves(export[key]), jax.tree.leaves(want),
                                    jax.tree.leaves(states[0][key])):
      np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7)
      assert np.asarray(got).dtype == np.asarray(first).dtype
    # Really a mean of two different checkpoints, not a copy of one of them.
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(states[0][key]), jax.tree.leaves(states[1][key])))

  assert too_many.returncode == 2
  lines = too_many.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxtrain.average: error: --last 5"), too_many.stderr
  assert not (run_dir / "exports" / "average_last5").exists()


@pytest.mark.slow
def test_ema_is_evaluated_and_checkpointed(ema_run):
  run_dir, _, _ = ema_run
  with (run_dir / "facts" / "scalars.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  ema_rows = [r for r in rows if r["split"] == "val_ema"]
  val_rows = [r for r in rows if r["split"] == "val"]
  assert ema_rows and {r["step"] for r in ema_rows} == {r["step"] for r in val_rows}
  assert all(float(r["loss"]) > 0 for r in ema_rows)
  final = read_summary(run_dir)["final_metrics"]
  assert "val_ema/loss" in final and "val/loss" in final
  assert final["val_ema/loss"] != final["val/loss"]  # the EMA weights are different weights
  state = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(STEPS) / "state")
  assert state["ema_params"] is not None
  assert jax.tree.structure(state["ema_params"]) == jax.tree.structure(state["params"])
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(state["ema_params"]), jax.tree.leaves(state["params"])))
