"""Fault tolerance: interrupted runs resume to the uninterrupted result.

Faults are injected with JAXTRAIN_FAULT=<kind>@<step> (SIGKILL at a plain
step, during an async checkpoint save and before any checkpoint; SIGTERM;
an exception), plus a real SIGTERM sent from outside. Also: damaged newest
checkpoints are set aside, NaN/spiking updates are skipped inside the step,
and a second SIGINT stops at once.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxtrain.actions.heartbeat import read_heartbeat
from jaxtrain.faults import FAULT_ENV

from _helpers import (cached_cli_env, checkpoint_steps, events_named, read_summary, run_cli,
                      short_overrides)

STEPS = 80
CKPT_EVERY = 20


def _overrides(run_dir, *extra):
  # keep=10: retention deletes nothing, so "nothing else was deleted" is checkable.
  return short_overrides(run_dir, STEPS, f"checkpoint.every={CKPT_EVERY}", "checkpoint.keep=10", *extra)


def _popen(run_dir: Path, cwd: Path, env: dict, fault: str | None = None, *extra: str) -> subprocess.Popen:
  env = dict(env)
  env.pop(FAULT_ENV, None)
  if fault:
    env[FAULT_ENV] = fault
  return subprocess.Popen([sys.executable, "-m", "jaxtrain.main", *_overrides(run_dir, *extra)], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed_steps(run_dir: Path) -> list[int]:
  ckpt = run_dir / "checkpoints"
  if not ckpt.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists())


def _scalar_keys_unique(run_dir: Path) -> None:
  lines = (run_dir / "facts" / "scalars.csv").read_text().splitlines()[1:]
  keys = [tuple(line.split(",")[:3]) for line in lines]
  assert len(keys) == len(set(keys)), "scalars.csv holds a (step, split) row twice"


# Fault kind, step, expected exit code of the interrupted run (None: any non-zero), extra overrides
# (logging only: params are those of the reference run).
FAULTS = {
    "sigkill_plain_step": ("sigkill", 50, -signal.SIGKILL, ()),
    "sigkill_during_save": ("sigkill", 40, -signal.SIGKILL, ()),
    # log_every=5: train rows are on disk before the kill, and must not be logged twice after the restart.
    "sigkill_before_first_checkpoint": ("sigkill", 12, -signal.SIGKILL, ("trainer.log_every=5",)),
    "sigterm": ("sigterm", 50, 75, ()),
    "exception": ("exception", 70, None, ()),
}


class _Run:
  """A finished subprocess and what its run dir held when it ended."""

  def __init__(self, run_dir: Path, proc: subprocess.Popen):
    self.run_dir = run_dir
    self.stdout, self.stderr = proc.communicate(timeout=400)
    self.returncode = proc.returncode
    self.checkpoints = _committed_steps(run_dir)
    self.heartbeat = read_heartbeat(run_dir / "heartbeat.json")
    self.has_summary = (run_dir / "summary.json").exists()


class _Reference:

  def __init__(self, run: _Run):
    assert run.returncode == 0, run.stderr[-3000:]
    self.run_dir = run.run_dir
    self.summary = read_summary(run.run_dir)
    self.params_fingerprint = self.summary["params_fingerprint"]


def _damage_truncate(run_dir: Path, step: int) -> None:
  data_files = list((run_dir / "checkpoints" / str(step) / "state").rglob("ocdbt.process_*/d/*"))
  assert data_files
  for path in data_files:
    with path.open("r+b") as f:
      f.truncate(path.stat().st_size // 2)


def _damage_meta(run_dir: Path, step: int) -> None:
  shutil.rmtree(run_dir / "checkpoints" / str(step) / "meta")


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory, compile_cache):
  """Every CLI run of this module, in three waves of concurrent subprocesses:
  the uninterrupted reference (which also fills the compilation cache); the
  interrupted runs; then their resumes together with the damaged-checkpoint runs."""
  base = tmp_path_factory.mktemp("faults")
  env = cached_cli_env(compile_cache)
  reference = _Reference(_Run(base / "uninterrupted", _popen(base / "uninterrupted", base, env)))

  procs = {name: _popen(base / name, base, env, f"{kind}@{step}", *extra)
           for name, (kind, step, _, extra) in FAULTS.items()}
  # A real SIGTERM from outside, once the first checkpoint is on disk.
  external_dir = base / "external_sigterm"
  external = _popen(external_dir, base, env)
  deadline = time.monotonic() + 300
  while not _committed_steps(external_dir):
    if external.poll() is not None:
      pytest.fail(f"run ended (rc={external.returncode}) before its first checkpoint: "
                  f"{external.stderr.read()[-3000:]}")
    if time.monotonic() > deadline:
      pytest.fail("no checkpoint within the timeout")
    time.sleep(0.01)
  os.kill(external.pid, signal.SIGTERM)
  procs["external_sigterm"] = external
  interrupted = {name: _Run(base / name, proc) for name, proc in procs.items()}

  # Wave 3: plain restarts in the same run dirs (run.resume=auto), and finished
  # runs whose newest (or every) checkpoint was damaged, restarted with more steps.
  damaged = {}
  for name, damage in (("truncated", _damage_truncate), ("no_meta", _damage_meta), ("all_damaged", None)):
    run_dir = base / name
    shutil.copytree(reference.run_dir, run_dir)
    steps = checkpoint_steps(run_dir)
    files = {s: _files(run_dir / "checkpoints" / str(s)) for s in steps}
    for step in (steps if damage is None else [max(steps)]):
      (damage or _damage_meta)(run_dir, step)
    damaged[name] = types.SimpleNamespace(run_dir=run_dir, steps_before=steps, files_before=files,
                                          damaged_files=_files(run_dir / "checkpoints" / str(max(steps))))
  procs = {name: _popen(run.run_dir, base, env, None, *(FAULTS[name][3] if name in FAULTS else ()))
           for name, run in interrupted.items()}
  procs.update({name: _popen(d.run_dir, base, env, None, f"trainer.steps={STEPS + 20}")
                for name, d in damaged.items()})
  finished = {name: _Run(base / name, proc) for name, proc in procs.items()}
  for name, run in interrupted.items():
    run.resumed = finished[name]
    run.starts = events_named(run.run_dir, "on_start")
  for name, d in damaged.items():
    d.rerun = finished[name]
  return reference, interrupted, damaged


def _resumed_summary(run) -> dict:
  assert run.resumed.returncode == 0, run.resumed.stderr[-3000:]
  return read_summary(run.run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
def test_injected_fault_then_resume_matches_uninterrupted(fault_runs, name):
  reference, runs, _ = fault_runs
  run = runs[name]
  kind, step, expected_rc, _ = FAULTS[name]
  if expected_rc is None:
    assert run.returncode not in (0, None), run.stderr[-3000:]
  else:
    assert run.returncode == expected_rc, run.stderr[-3000:]
  # It really stopped early: no summary, no checkpoint after the fault step.
  assert not run.has_summary
  assert all(s <= step for s in run.checkpoints), run.checkpoints
  assert len(run.starts) == 2 and run.starts[0]["step"] == 0
  resumed_at = run.starts[1]["step"]
  if kind == "sigkill":
    # Resumed from the newest checkpoint that had committed when the process died: the latest one
    # before the kill, or one earlier (an async save may still be in flight then; at a checkpoint
    # step the kill lands during that step's save). Never a half-written one.
    assert resumed_at == max(run.checkpoints, default=0)
    latest_due = step // CKPT_EVERY * CKPT_EVERY
    assert resumed_at in {latest_due, max(0, latest_due - CKPT_EVERY)}, (resumed_at, run.checkpoints)
    if step >= 2 * CKPT_EVERY:
      assert resumed_at > 0  # a real resume, not a restart
  else:
    assert resumed_at == step  # preemption/emergency checkpoint at exactly the fault step
    assert max(run.checkpoints) == step
  summary = _resumed_summary(run)
  assert summary["final_step"] == STEPS
  assert summary["steps_this_session"] == STEPS - resumed_at
  assert summary["params_fingerprint"] == reference.params_fingerprint
  assert summary["final_metrics"] == reference.summary["final_metrics"]
  _scalar_keys_unique(run.run_dir)


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_reports_preemption(fault_runs):
  _, runs, _ = fault_runs
  run = runs["sigterm"]
  assert run.returncode == 75
  assert 50 in run.checkpoints
  preemptions = events_named(run.run_dir, "on_preemption")
  assert len(preemptions) == 1 and preemptions[0]["step"] == 50 and preemptions[0]["signal"] == "SIGTERM"
  assert run.heartbeat["phase"] == "preempted" and run.heartbeat["step"] == 50
  stopped = [line for line in run.stderr.splitlines() if line.startswith("jaxtrain: stopped:")]
  assert len(stopped) == 1, run.stderr[-3000:]
  assert "step 50" in stopped[0] and "SIGTERM" in stopped[0]
  assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_external_sigterm_exits_75_and_resumes_identically(fault_runs):
  reference, runs, _ = fault_runs
  run = runs["external_sigterm"]
  assert run.returncode == 75, run.stderr[-3000:]
  assert not run.has_summary
  (preemption,) = events_named(run.run_dir, "on_preemption")
  assert CKPT_EVERY <= preemption["step"] < STEPS and preemption["signal"] == "SIGTERM"
  assert preemption["step"] == max(run.checkpoints)
  assert run.starts[1]["step"] == preemption["step"]
  assert _resumed_summary(run)["params_fingerprint"] == reference.params_fingerprint
  assert [line for line in run.stderr.splitlines() if line.startswith("jaxtrain: stopped:")]


@pytest.mark.slow
def test_exception_writes_event_and_emergency_checkpoint(fault_runs):
  _, runs, _ = fault_runs
  run = runs["exception"]
  failures = events_named(run.run_dir, "on_exception")
  assert len(failures) == 1 and failures[0]["error"] == "InjectedFault"
  assert "step 70" in failures[0]["message"]
  assert 70 in run.checkpoints  # 70 is not a checkpoint step: the emergency checkpoint
  assert run.heartbeat["phase"] == "failed" and run.heartbeat["step"] == 70
  assert "InjectedFault" in run.stderr


# ---------------------------------------------------------------------------
# Damaged checkpoints


def _files(path: Path) -> set[str]:
  return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def _damaged_dirs(run_dir: Path) -> list[Path]:
  return sorted(p for p in (run_dir / "checkpoints").iterdir() if ".damaged-" in p.name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["truncated", "no_meta"])
def test_damaged_newest_checkpoint_falls_back_to_previous(fault_runs, name):
  _, _, damaged = fault_runs
  d = damaged[name]
  run_dir, newest = d.run_dir, max(d.steps_before)
  assert newest == STEPS and newest - CKPT_EVERY in d.steps_before
  proc = d.rerun
  assert proc.returncode == 0, proc.stderr[-3000:]
  starts = events_named(run_dir, "on_start")
  assert len(starts) == 2 and starts[-1]["step"] == newest - CKPT_EVERY
  assert read_summary(run_dir)["final_step"] == STEPS + 20
  # Set aside, not deleted: the renamed folder holds every file the damaged checkpoint had.
  (aside,) = _damaged_dirs(run_dir)
  assert aside.name.startswith(f"{newest}.damaged-")
  assert _files(aside) == d.damaged_files
  # Nothing else was deleted: every older checkpoint is intact (and `newest` was written again).
  assert d.steps_before <= checkpoint_steps(run_dir)
  for step in d.steps_before - {newest}:
    assert _files(run_dir / "checkpoints" / str(step)) == d.files_before[step]
  output = proc.stdout + proc.stderr
  warnings = [line for line in output.splitlines() if "cannot be restored" in line]
  assert len(warnings) == 1, output[-3000:]
  assert str(run_dir / "checkpoints" / str(newest)) in warnings[0]
  assert "Traceback" not in output
  damaged_events = [e for e in events_named(run_dir, "on_exception") if e["error"] == "DamagedCheckpoint"]
  assert len(damaged_events) == 1 and damaged_events[0]["step"] == newest - CKPT_EVERY


@pytest.mark.slow
def test_all_checkpoints_damaged_is_one_line_exit_2(fault_runs):
  reference, _, damaged = fault_runs
  d = damaged["all_damaged"]
  proc = d.rerun
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("jaxtrain: error:")]
  assert len(errors) == 1 and "every checkpoint is damaged" in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr + proc.stdout
  # Kept on disk (renamed aside), none deleted, nothing trained.
  assert len(_damaged_dirs(d.run_dir)) == len(d.steps_before)
  assert read_summary(d.run_dir) == reference.summary
  assert len(events_named(d.run_dir, "on_start")) == 1


# ---------------------------------------------------------------------------
# Non-finite and spiking losses


def _engine(tmp_path, *extra):
  from jaxtrain.build import build
  from jaxtrain.config.compose import compose
  from jaxtrain.config.validate import validate

  return build(validate(compose(short_overrides(tmp_path / "run", 40, *extra))))


def test_nan_batch_skips_the_update(tmp_path):
  engine = _engine(tmp_path, "schedule=constant")  # no warmup: the first applied update has lr > 0
  assert engine.task.guard is not None  # on a CPU the default step skips under lax.cond itself
  state = engine.state
  clean = engine.train_data[0]
  poisoned = {k: np.array(v, copy=True) for k, v in clean.items()}
  poisoned["x"][0, 0] = np.nan

  before = jax.device_get((state.params, state.opt_state, state.step))
  state, metrics = engine.train_step(state, engine.put_batch(poisoned))
  metrics = jax.device_get(metrics)
  assert metrics["skipped"] == 1 and metrics["bad_steps"] == 1
  assert not math.isfinite(float(metrics["loss"]))
  chex.assert_trees_all_equal(jax.device_get(state.params), before[0])
  chex.assert_trees_all_equal(jax.device_get(state.opt_state), before[1])
  assert int(state.step) == int(before[2]) + 1
  assert int(state.guard.total_skipped) == 1 and int(state.guard.consecutive_bad) == 1

  params_before = jax.device_get(state.params)
  state, metrics = engine.train_step(state, engine.put_batch(clean))
  metrics = jax.device_get(metrics)
  assert metrics["skipped"] == 0 and metrics["bad_steps"] == 0
  assert math.isfinite(float(metrics["loss"]))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), params_before)
  assert all(jax.tree.leaves(changed))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))
  assert int(state.step) == int(before[2]) + 2
  assert int(state.guard.total_skipped) == 1 and int(state.guard.consecutive_bad) == 0


def test_without_grad_norm_the_step_is_the_same_update_and_a_nan_loss_is_still_skipped(tmp_path):
  default = _engine(tmp_path / "a", "schedule=constant")
  lean = _engine(tmp_path / "b", "schedule=constant", "trainer.grad_norm=false")
  batch = default.train_data[0]
  state_a, metrics_a = default.train_step(default.state, default.put_batch(batch))
  state_b, metrics_b = lean.train_step(lean.state, lean.put_batch(batch))
  assert "grad_norm" in metrics_a and "grad_norm" not in metrics_b
  chex.assert_trees_all_close(jax.device_get(state_b.params), jax.device_get(state_a.params), rtol=1e-6)
  assert float(metrics_b["loss"]) == pytest.approx(float(metrics_a["loss"]), rel=1e-6)

  poisoned = {k: np.array(v, copy=True) for k, v in batch.items()}
  poisoned["x"][0, 0] = np.nan
  params_before = jax.device_get(state_b.params)
  state_b, metrics_b = lean.train_step(state_b, lean.put_batch(poisoned))
  assert float(metrics_b["skipped"]) == 1.0
  chex.assert_trees_all_equal(jax.device_get(state_b.params), params_before)


@pytest.mark.slow
def test_diverging_run_stops_with_exit_3(tmp_path, compile_cache):
  run_dir = tmp_path / "run"
  proc = run_cli(short_overrides(run_dir, 60, "optim=sgd", "optim.lr=1e8", "schedule=constant",
                                 "trainer.max_bad_steps=5", "trainer.log_every=5", "checkpoint.every=10"),
                 cwd=tmp_path, env=cached_cli_env(compile_cache))
  assert proc.returncode == 3, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.strip().splitlines() if line.startswith("jaxtrain: error:")]
  assert len(errors) == 1 and "consecutive updates skipped" in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr
  summary = read_summary(run_dir)
  assert "consecutive updates skipped" in summary["stop_reason"]
  assert summary["final_step"] < 60
  assert summary["skipped_updates"] >= 5
  steps = checkpoint_steps(run_dir)
  assert steps
  restored = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(max(steps)) / "state")
  leaves = jax.tree.leaves(restored["params"])
  assert leaves and all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)


def _toy_state():
  from jaxtrain.core.state import TrainState

  return TrainState.create(params={"w": jnp.ones((3,), jnp.float32)}, tx=optax.sgd(1e-3),
                           rng=jax.random.PRNGKey(0))


def _toy_step(state, scale):
  """loss = scale * |w|^2 (scale is the "batch")."""
  def loss_fn(params):
    return scale * jnp.sum(jnp.square(params["w"]))
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads), {"loss": loss, "grad_norm": optax.global_norm(grads)}


def test_spike_is_skipped_only_after_warmup():
  from jaxtrain.core.guard import guarded

  window = 10
  step = jax.jit(guarded(_toy_step, spike_zscore=4.0, spike_window=window))
  noise = np.random.default_rng(0).uniform(0.9, 1.1, size=64).astype(np.float32)
  state = _toy_state()

  # Before warmup (fewer than `window` good steps) a 100x spike is applied.
  for i in range(3):
    state, m = step(state, jnp.float32(noise[i]))
  state, m = step(state, jnp.float32(100.0))
  assert float(m["skipped"]) == 0.0
  for i in range(3, 3 + 2 * window):
    state, m = step(state, jnp.float32(noise[i]))
    assert float(m["skipped"]) == 0.0
  assert int(state.guard.good_steps) >= window

  # After warmup the same spike is skipped: params and opt state unchanged, step advanced.
  params, step_before = jax.device_get(state.params), int(state.step)
  state, m = step(state, jnp.float32(100.0 * float(noise[40])))
  assert float(m["skipped"]) == 1.0 and int(m["bad_steps"]) == 1
  chex.assert_trees_all_equal(jax.device_get(state.params), params)
  assert int(state.step) == step_before + 1 and int(state.guard.total_skipped) == 1
  # An ordinary loss afterwards is applied again.
  state, m = step(state, jnp.float32(noise[41]))
  assert float(m["skipped"]) == 0.0 and int(state.guard.consecutive_bad) == 0


# ---------------------------------------------------------------------------
# Signals


def test_default_step_guards_its_update_as_the_wrapper_does():
  """The default step skips a bad update under lax.cond; the generic wrapper keeps the old state by a
  select afterwards. Same states and guard metrics over good, NaN and spiking steps."""
  from jaxtrain.core.guard import StepGuard, guarded
  from jaxtrain.core.state import TrainState
  from jaxtrain.core.step import make_train_step

  def loss_fn(params, model_state, scale, rng, train):
    return scale * jnp.sum(jnp.square(params["w"])), ({}, model_state)

  guard = StepGuard(skip_nonfinite=True, spike_zscore=4.0, spike_window=4)
  inline = make_train_step(loss_fn, guard=guard)
  wrapped = guarded(make_train_step(loss_fn), guard)
  assert inline.guards_updates and guarded(inline, guard) is inline
  tx = optax.adamw(optax.constant_schedule(1e-2))
  states = [TrainState.create(params={"w": jnp.arange(3.0)}, tx=tx, rng=jax.random.PRNGKey(0))] * 2
  steps = [jax.jit(inline), jax.jit(wrapped)]
  scales = [1.0, 1.1, 0.9, 1.0, 1.05, float("nan"), 1.0, 500.0, 0.95, 1.0]
  skipped = []
  for scale in scales:
    outs = [step(state, jnp.float32(scale)) for step, state in zip(steps, states)]
    states = [state for state, _ in outs]
    chex.assert_trees_all_close(jax.device_get(states[0]), jax.device_get(states[1]), rtol=1e-6)
    (m_inline, m_wrapped) = [jax.device_get(m) for _, m in outs]
    for key in ("skipped", "bad_steps", "grad_norm"):
      np.testing.assert_allclose(m_inline[key], m_wrapped[key], rtol=1e-6)
    skipped.append(float(m_inline["skipped"]))
  assert skipped == [0, 0, 0, 0, 0, 1, 0, 1, 0, 0]
  assert int(states[0].step) == len(scales) and int(states[0].guard.total_skipped) == 2


def test_second_sigint_raises_keyboard_interrupt_and_handlers_are_restored():
  from jaxtrain.preemption import PreemptionWatcher

  previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
  with pytest.raises(KeyboardInterrupt):
    with PreemptionWatcher(("SIGTERM", "SIGINT")) as watcher:
      assert signal.getsignal(signal.SIGINT) == watcher._handle
      assert not watcher.should_stop(1)
      signal.raise_signal(signal.SIGINT)
      assert watcher.received == "SIGINT" and watcher.should_stop(2)
      signal.raise_signal(signal.SIGINT)  # the second Ctrl-C: stop now
      pytest.fail("the second SIGINT did not interrupt")
  assert {sig: signal.getsignal(sig) for sig in previous} == previous

  # SIGTERM only ever sets the flag, however often it arrives.
  with PreemptionWatcher(("SIGTERM", "SIGINT")) as watcher:
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    assert watcher.received == "SIGTERM"
  assert {sig: signal.getsignal(sig) for sig in previous} == previous
