"""SIGKILL after a checkpoint, resume in the same run dir => the uninterrupted fingerprint.

Also: run.resume=never refuses a directory that holds a run, and
run.resume=<old run dir> continues a new run from the old checkpoint's step.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jaxtrain
from jaxtrain.errors import ConfigError

from _helpers import checkpoint_steps, cli_env, events_named, read_summary, run_cli, short_overrides

STEPS = 100  # long enough that the killed run is still training when killed


def _overrides(run_dir):
  return short_overrides(run_dir, STEPS, "trainer.eval_every=50", "checkpoint.every=20", "checkpoint.keep=2")


def _first_committed_step(run_dir: Path):
  ckpt = run_dir / "checkpoints"
  if not ckpt.is_dir():
    return None
  done = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists()]
  return min(done) if done else None


def _start_and_kill_after_first_checkpoint(run_dir: Path, cwd: Path, timeout: float = 180):
  proc = subprocess.Popen([sys.executable, "-m", "jaxtrain.main", *_overrides(run_dir)], cwd=cwd, env=cli_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + timeout
  try:
    while _first_committed_step(run_dir) is None:
      if proc.poll() is not None:
        pytest.fail(f"run ended (rc={proc.returncode}) before its first checkpoint: {proc.stderr.read()[-3000:]}")
      if time.monotonic() > deadline:
        pytest.fail("no checkpoint within the timeout")
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    proc.stderr.close()
  return proc.returncode


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
  killed_dir = tmp_path / "killed"
  rc = _start_and_kill_after_first_checkpoint(killed_dir, tmp_path)
  assert rc == -signal.SIGKILL
  # Killed mid-run: no summary, and no checkpoint of the final step.
  assert not (killed_dir / "summary.json").exists()
  assert not events_named(killed_dir, "on_train_end")
  saved = checkpoint_steps(killed_dir)
  assert saved and max(saved) < STEPS

  resumed = run_cli(_overrides(killed_dir), cwd=tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  starts = events_named(killed_dir, "on_start")
  assert len(starts) == 2 and starts[0]["step"] == 0
  assert starts[1]["step"] in saved and starts[1]["step"] > 0
  assert starts[1]["resumed_from"] == str(killed_dir / "checkpoints")

  uninterrupted = jaxtrain.run(jaxtrain.compose(_overrides(tmp_path / "uninterrupted")))
  summary = read_summary(killed_dir)
  assert summary["final_step"] == STEPS
  assert summary["steps_this_session"] == STEPS - starts[1]["step"]
  assert summary["params_fingerprint"] == uninterrupted.params_fingerprint
  assert summary["final_metrics"] == uninterrupted.summary["final_metrics"]
  assert summary["best_step"] == uninterrupted.summary["best_step"]
  # scalars.csv holds each step once: replayed steps were not logged twice.
  lines = (killed_dir / "facts" / "scalars.csv").read_text().splitlines()[1:]
  keys = [tuple(line.split(",")[:3]) for line in lines]
  assert len(keys) == len(set(keys))

  # run.resume=never on a directory that holds a run: one line, exit 2.
  never = run_cli(_overrides(killed_dir) + ["run.resume=never"], cwd=tmp_path)
  assert never.returncode == 2
  err_lines = never.stderr.strip().splitlines()
  assert len(err_lines) == 1, never.stderr
  assert err_lines[0].startswith("jaxtrain: error: run.resume=never")
  assert str(killed_dir) in err_lines[0]
  assert "Traceback" not in never.stderr + never.stdout
  assert len(events_named(killed_dir, "on_start")) == 2  # nothing ran
  assert read_summary(killed_dir) == summary  # nothing already saved was touched


def test_resume_from_another_run_dir(reference_run, tmp_path):
  """run.resume=<old run dir> with a new run.dir starts at the old run's newest checkpoint."""
  old = Path(reference_run.run_dir)
  old_steps = checkpoint_steps(old)
  new_dir = tmp_path / "finetune"
  overrides = [o for o in reference_run.overrides if not o.startswith(("run.dir=", "trainer.steps="))]
  result = jaxtrain.run(jaxtrain.compose(overrides + [f"run.dir={new_dir}", "trainer.steps=50",
                                                      f"run.resume={old}"]))
  start = events_named(new_dir, "on_start")[0]
  assert start["step"] == max(old_steps) == 40
  assert start["resumed_from"] == str(old / "checkpoints")
  assert result.summary["final_step"] == 50
  assert result.summary["steps_this_session"] == 10
  assert checkpoint_steps(old) == old_steps  # the old run is only read
  assert 50 in checkpoint_steps(new_dir)


def test_resume_from_missing_path_is_a_config_error(tmp_path):
  from jaxtrain.errors import ConfigError

  with pytest.raises(ConfigError, match="no such run directory"):
    jaxtrain.run(jaxtrain.compose(short_overrides(tmp_path / "new", 10) + [f"run.resume={tmp_path / 'nope'}"]))
  assert not (tmp_path / "new").exists()


def test_checkpoint_of_another_model_size_is_refused_and_kept(reference_run, tmp_path):
  # A changed config is not damage: one line naming the param, no checkpoint set aside or skipped.
  run_dir = tmp_path / "run"
  shutil.copytree(reference_run.run_dir, run_dir)
  before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
  overrides = [o for o in reference_run.overrides if not o.startswith("run.dir=")]
  message = r"does not fit this config \(param decoder/mlp/hidden_0/kernel: saved \(16, 256\), this config \(8, 256\)\)"
  with pytest.raises(ConfigError, match=message):
    jaxtrain.run(jaxtrain.compose([*overrides, f"run.dir={run_dir}", "model.latent_dim=8"]))
  assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_stderr_of_a_restore_is_kept_when_it_succeeds_and_dropped_when_it_fails(capfd):
  import os

  import pytest

  from jaxtrain import resume

  with resume._quiet_sibling_read_errors():
    os.write(2, b"kept: a warning from a good restore\n")
  with pytest.raises(ValueError):
    with resume._quiet_sibling_read_errors():
      os.write(2, b"Traceback (most recent call last): from an abandoned read\n")
      raise ValueError("damaged")
  err = capfd.readouterr().err
  assert "kept: a warning from a good restore" in err and "Traceback" not in err


def test_late_reports_of_abandoned_orbax_reads_are_dropped_and_others_kept():
  import logging
  import os
  import sys

  from jaxtrain import resume

  def error_from(filename):
    namespace = {}
    exec(compile("def read():\n  raise Exception('damaged')\n", filename, "exec"), namespace)
    try:
      namespace["read"]()
    except Exception as err:
      return err

  def record(error):
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "Task exception was never retrieved", None,
                             (type(error), error, error.__traceback__))

  previous_hook = sys.unraisablehook
  try:
    resume._drop_abandoned_orbax_reads()
    resume._drop_abandoned_orbax_reads()  # installed once
    assert sys.unraisablehook.drops_abandoned_orbax_reads
    orbax_file = os.path.join(os.sep, "site-packages", "orbax", "serialization.py")
    assert not resume._not_an_abandoned_orbax_read(record(error_from(orbax_file)))
    assert resume._not_an_abandoned_orbax_read(record(error_from("mine.py")))
  finally:
    sys.unraisablehook = previous_hook
    logging.getLogger("asyncio").removeFilter(resume._not_an_abandoned_orbax_read)
