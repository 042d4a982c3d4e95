"""Everything a run leaves in its directory, safe run names, and the on_exception event."""

import csv
import json
from pathlib import Path

import pytest
import yaml

import jaxtrain
from jaxtrain import api
from jaxtrain.actions.base import PeriodicAction
from jaxtrain.track import rundir

from _helpers import checkpoint_steps, events_named, read_events, read_summary, short_overrides

SCALAR_COLUMNS = ["step", "epoch", "split", "loss", "lr", "steps_per_sec", "epoch_time_s", "max_memory_mib"]
SUMMARY_KEYS = ["final_step", "best_step", "best_metrics", "final_metrics", "train_steps_per_sec",
                "compile_seconds", "params_fingerprint"]


def test_run_directory_contents(reference_run):
  run_dir = Path(reference_run.run_dir)
  assert reference_run.result.run_dir == run_dir

  config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
  assert config["trainer"]["steps"] == 40 and config["checkpoint"]["keep"] == 1
  assert "hydra" not in config
  overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
  assert "trainer.steps=40" in overrides and f"run.dir={run_dir}" in overrides

  events = read_events(run_dir)
  names = [e["event"] for e in events]
  for name in ("on_start", "on_eval", "on_checkpoint", "on_epoch_end", "on_train_end"):
    assert name in names, name
  assert names[0] == "on_start" and names[-1] == "on_train_end"
  assert "on_exception" not in names
  start = events[0]
  assert start["step"] == 0 and start["total_steps"] == 40 and start["devices"] == 8
  assert [e["step"] for e in events_named(run_dir, "on_epoch_end")] == list(range(5, 41, 5))
  assert [e["step"] for e in events_named(run_dir, "on_checkpoint")] == [10, 20, 30, 40]
  assert [e["step"] for e in events_named(run_dir, "on_eval")] == [10, 20, 30, 40]
  assert events[-1]["step"] == 40

  with (run_dir / "facts" / "scalars.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  header = list(rows[0].keys())
  for column in SCALAR_COLUMNS:
    assert column in header, column
  assert header[:4] == ["step", "epoch", "split", "loss"]
  train = [r for r in rows if r["split"] == "train"]
  val = [r for r in rows if r["split"] == "val"]
  assert [int(r["step"]) for r in train] == [10, 20, 30, 40]
  assert [int(r["step"]) for r in val] == [10, 20, 30, 40]
  assert all(float(r["loss"]) > 0 and float(r["lr"]) >= 0 and float(r["max_memory_mib"]) > 0 for r in train)
  assert all(r["steps_per_sec"] for r in train[1:])  # a rate needs two log points

  assert (run_dir / "checkpoints").is_dir() and checkpoint_steps(run_dir)
  summary = read_summary(run_dir)
  for key in SUMMARY_KEYS:
    assert key in summary, key
  assert summary["final_step"] == 40
  assert summary["best_step"] in (10, 20, 30, 40)
  assert set(summary["best_metrics"]) == {"val/loss"}
  assert set(summary["final_metrics"]) == {"val/loss", "val/mse"}
  assert summary["final_metrics"]["val/loss"] == pytest.approx(float(val[-1]["loss"]), rel=1e-5)
  assert summary["train_steps_per_sec"] > 0 and summary["compile_seconds"] > 0
  assert summary["stop_reason"] is None


def test_run_name_is_sanitised(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  root = tmp_path / "outputs"
  cfg = jaxtrain.compose(["run.name='../../evil name'", f"run.root={root}", "trainer.steps=5",
                          "trainer.epochs=null", "checkpoint.every=5", "trainer.eval_every=5",
                          "logging.progress=none"])
  assert cfg.run.dir is None
  result = jaxtrain.run(cfg)
  run_dir = Path(result.run_dir)
  assert ".." not in run_dir.parts
  assert run_dir.resolve().parent == (root / "runs").resolve()
  assert run_dir.name.startswith("run_") and run_dir.name.endswith("_evil-name")
  assert (run_dir / "summary.json").exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # nothing escaped


@pytest.mark.parametrize("name,expected", [("../../evil name", "evil-name"), ("/etc/passwd", "etc-passwd"),
                                           ("..", "run"), ("", "run"), (None, "run"), ("ok_name-1.2", "ok_name-1.2")])
def test_safe_name(name, expected):
  assert rundir.safe_name(name) == expected


class _Boom(PeriodicAction):

  def run(self, ctx):
    raise RuntimeError(f"boom at step {ctx.step}")


def test_exception_writes_on_exception_event(tmp_path, monkeypatch):
  real_fit = api.fit

  def fit_that_fails(state, train_step, data_iterator, actions, **kwargs):
    return real_fit(state, train_step, data_iterator, [*actions, _Boom(every_steps=3, at_end=False)], **kwargs)

  monkeypatch.setattr(api, "fit", fit_that_fails)
  run_dir = tmp_path / "run"
  with pytest.raises(RuntimeError, match="boom at step 3"):
    jaxtrain.run(jaxtrain.compose(short_overrides(run_dir, 40)))
  events = read_events(run_dir)
  assert events[0]["event"] == "on_start"
  assert events[-1]["event"] == "on_exception"
  assert events[-1]["error"] == "RuntimeError"
  assert "boom at step 3" in events[-1]["message"]
  assert "RuntimeError" in events[-1]["traceback"]
  assert not events_named(run_dir, "on_train_end")
  assert not (run_dir / "summary.json").exists()
  json.dumps(events)  # every line was valid JSON
