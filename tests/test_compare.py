"""Run comparison: from Python on run directories, and after a --multirun sweep (comparison.csv/.md, best run)."""

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from jaxtrain.track.compare import (MultirunComparison, compare, compare_runs, load_run, sweep_run_dirs,
                                    write_comparison)

from _helpers import cached_cli_env, run_cli

# One CPU device: these runs are about files, not sharding, and compile about twice as fast.
ONE_DEVICE = "--xla_force_host_platform_device_count=1"


def _fake_run(run_dir: Path, overrides, val_losses, monitor="val/loss", mode="min", finished=True):
  """A run directory as jaxtrain writes it, with one on_eval event per value (every 10 steps)."""
  (run_dir / ".hydra").mkdir(parents=True)
  (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
  (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"checkpoint": {"monitor": monitor, "mode": mode}}))
  (run_dir / "facts").mkdir()
  events = [{"event": "on_eval", "step": 10 * (i + 1), "metrics": {"val/loss": v, "val/mse": v}}
            for i, v in enumerate(val_losses)]
  (run_dir / "facts" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
  if finished:
    summary = {"final_metrics": {"val/loss": val_losses[-1], "val/mse": val_losses[-1]}, "best_step": None}
    (run_dir / "summary.json").write_text(json.dumps(summary))
  return run_dir


def test_compare_run_dirs_names_the_best(tmp_path):
  runs = [
      _fake_run(tmp_path / "run_0", ["optim.lr=1e-4", "trainer.steps=30"], [0.5, 0.4, 0.35]),
      _fake_run(tmp_path / "run_1", ["optim.lr=1e-3", "trainer.steps=30"], [0.3, 0.1, 0.2]),  # best 0.1 at 20
      _fake_run(tmp_path / "run_2", ["optim.lr=1e-2", "trainer.steps=30"], [float("nan")] * 3),
      _fake_run(tmp_path / "run_10", ["optim.lr=1e-1", "trainer.steps=30"], [0.25], finished=False),
  ]
  assert [p.name for p in sweep_run_dirs(tmp_path)] == ["run_0", "run_1", "run_2", "run_10"]
  comparison = compare_runs(runs)
  assert comparison.monitor == "val/loss" and comparison.mode == "min"
  assert comparison.best.name == "run_1" and comparison.best.best_value == pytest.approx(0.1)
  assert comparison.best.best_step == 20
  line = comparison.best_line()
  assert "run_1" in line and "optim.lr=1e-3" in line and "trainer.steps=30" not in line and "0.1" in line

  # max mode: the largest best value wins; NaN never does.
  by_max = compare_runs(runs, mode="max")
  assert by_max.best.name == "run_0" and by_max.best.best_value == pytest.approx(0.5)
  assert not load_run(runs[3]).finished

  csv_path, md_path = write_comparison(comparison, tmp_path / "out")
  with csv_path.open(newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["run_0", "run_1", "run_2", "run_10"]
  assert [r["is_best"] for r in rows] == ["False", "True", "False", "False"]
  assert rows[0]["overrides"] == "optim.lr=1e-4 trainer.steps=30"
  assert float(rows[1]["best val/loss"]) == pytest.approx(0.1) and float(rows[1]["val/loss"]) == pytest.approx(0.2)
  assert rows[2]["best val/loss"] == "" and math.isnan(float(rows[2]["val/loss"]))
  markdown = md_path.read_text()
  assert line in markdown and "**run_1** (best)" in markdown and "`trainer.steps=30`" in markdown
  assert "run_10 (unfinished)" in markdown


def test_compare_without_a_monitor_names_no_best(tmp_path):
  run = _fake_run(tmp_path / "run_0", [], [0.3], monitor=None)
  comparison = compare([load_run(run)], monitor=None)
  assert comparison.best is None and "checkpoint.monitor is not set" in comparison.best_line()
  with pytest.raises(ValueError, match="mode"):
    compare([], "val/loss", "median")


def _job_return(num, overrides, summary):
  job = JobReturn(overrides=overrides, hydra_cfg=OmegaConf.create({"hydra": {"job": {"num": num}}}),
                  status=JobStatus.COMPLETED)
  job.return_value = summary
  return job


@pytest.mark.parametrize("save_artifacts", [True, False])
def test_multirun_callback(tmp_path, capsys, save_artifacts):
  """From the sweep's run directories when they exist, else from the summaries the jobs returned."""
  if save_artifacts:
    _fake_run(tmp_path / "run_0", ["optim.lr=1e-3"], [0.4, 0.3])
    _fake_run(tmp_path / "run_1", ["optim.lr=3e-3"], [0.2, 0.25])
  config = OmegaConf.create({"checkpoint": {"monitor": "val/loss", "mode": "min"},
                             "logging": {"save_artifacts": save_artifacts}, "hydra": {"sweep": {"dir": str(tmp_path)}}})
  callback = MultirunComparison()
  for num, (lr, best) in enumerate((("1e-3", 0.3), ("3e-3", 0.2))):
    summary = {"final_metrics": {"val/loss": best}, "best_metrics": {"val/loss": best}, "best_step": 20}
    callback.on_job_end(config, _job_return(num, [f"optim.lr={lr}"], summary))
  callback.on_multirun_end(config)
  out = capsys.readouterr().out
  if save_artifacts:  # the run directories' events: 0.2 at step 10
    assert out == "best run by val/loss (min): run_1 (optim.lr=3e-3) with val/loss=0.2 at step 10\n"
  else:  # the returned summaries
    assert out == "best run by val/loss (min): job_1 (optim.lr=3e-3) with val/loss=0.2 at step 20\n"
  assert (tmp_path / "comparison.csv").exists() == save_artifacts


@pytest.mark.slow
def test_multirun_sweep_writes_the_comparison(tmp_path, compile_cache):
  """Three latents on the default task: three runs, comparison.csv/.md in the sweep dir, the best printed."""
  proc = run_cli(["--multirun", "model/latent=none,linear,vq", f"run.root={tmp_path / 'outputs'}",
                  "trainer.steps=20", "trainer.epochs=null", "trainer.log_every=10", "trainer.eval_every=10",
                  "checkpoint.every=20", "logging.progress=none"],
                 cwd=tmp_path, env=cached_cli_env(compile_cache, XLA_FLAGS=ONE_DEVICE))
  assert proc.returncode == 0, proc.stderr[-3000:]
  (sweep_dir,) = (tmp_path / "outputs" / "multiruns").iterdir()
  runs = sweep_run_dirs(sweep_dir)
  assert [p.name for p in runs] == ["run_0", "run_1", "run_2"]
  assert all((p / "summary.json").exists() for p in runs)

  with (sweep_dir / "comparison.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  latents = [next(o for o in r["overrides"].split() if o.startswith("model/latent=")) for r in rows]
  assert latents == ["model/latent=none", "model/latent=linear", "model/latent=vq"]
  best_values = [float(r["best val/loss"]) for r in rows]
  best = min(range(3), key=best_values.__getitem__)
  assert [r["is_best"] for r in rows] == [str(i == best) for i in range(3)]
  best_line = next(line for line in proc.stdout.splitlines() if line.startswith("best run by val/loss (min)"))
  assert f"run_{best} ({latents[best]})" in best_line
  assert best_line in (sweep_dir / "comparison.md").read_text()
