"""logging.save_artifacts=false: a run leaves no files at all, from Python and from the CLI."""

import tempfile
from pathlib import Path

import pytest

import jaxtrain

from _helpers import cached_cli_env, run_cli

# One CPU device: these runs are about files, not sharding, and compile about twice as fast.
ONE_DEVICE = "--xla_force_host_platform_device_count=1"

SHORT = ["trainer.steps=20", "trainer.epochs=null", "trainer.log_every=10", "trainer.eval_every=10",
         "checkpoint.every=10", "logging.progress=none", "logging.save_artifacts=false"]


def _all_files(root: Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_python_run_leaves_no_files(tmp_path, monkeypatch):
  work, scratch = tmp_path / "work", tmp_path / "tmp"
  work.mkdir()
  scratch.mkdir()
  monkeypatch.chdir(work)
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the run's throwaway directory goes
  # Figures switched on as well: they must not appear either.
  result = jaxtrain.run(jaxtrain.compose(SHORT + ["logging=plots_minimal"]))
  assert _all_files(work) == [] and _all_files(scratch) == []
  assert result.run_dir is None
  assert result.summary["final_step"] == 20 and result.summary["final_metrics"]["val/loss"] > 0
  assert set(result.summary["best_metrics"]) == {"val/loss"}
  assert int(result.state.step) == 20 and len(result.params_fingerprint) == 64


@pytest.mark.slow
def test_cli_run_leaves_no_files(tmp_path, compile_cache):
  """Hydra's own outputs (.hydra, the job log, the run dir) go too."""
  work, scratch = tmp_path / "work", tmp_path / "tmp"
  work.mkdir()
  scratch.mkdir()
  proc = run_cli(SHORT, cwd=work, env=cached_cli_env(compile_cache, TMPDIR=str(scratch), XLA_FLAGS=ONE_DEVICE))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _all_files(work) == [] and _all_files(scratch) == []
  assert "finished at step 20" in proc.stdout and "run directory: none (logging.save_artifacts=false)" in proc.stdout
