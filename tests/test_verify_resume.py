"""`python -m jaxtrain.verify_resume`: kill + resume reproduces the uninterrupted run,
for the default task and for a plugin task with its own state (BatchNorm
statistics) plus an EMA and the spike guard's statistics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxtrain import verify_resume

from _helpers import TESTS, cached_cli_env

COMMON = ["trainer.steps=80", "trainer.epochs=null", "checkpoint.every=20", "trainer.eval_every=20",
          "trainer.log_every=10"]
BN_TASK = ["task=bn_regression", "schedule=constant", "optim=adam", "optim.lr=3e-3", "trainer.ema_decay=0.9",
           "trainer.spike_zscore=6", "trainer.spike_window=10"]


def _start(workdir: Path, at: int, overrides, env) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "jaxtrain.verify_resume", "--at", str(at), "--workdir",
                           str(workdir), *overrides], cwd=workdir.parent, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen) -> tuple[int, dict, str]:
  out, err = proc.communicate(timeout=400)
  assert "{" in out, err[-3000:]
  report = json.loads(out[out.index("{"):out.rindex("}") + 1])
  return proc.returncode, report, err


@pytest.fixture(scope="module")
def reports(tmp_path_factory, compile_cache):
  """Both verifications, run concurrently."""
  base = tmp_path_factory.mktemp("verify")
  default_dir, bn_dir = base / "default", base / "bn"
  default_dir.mkdir()
  bn_dir.mkdir()
  default = _start(default_dir, 30, COMMON, cached_cli_env(compile_cache))
  bn = _start(bn_dir, 40, COMMON + BN_TASK,
              cached_cli_env(compile_cache, JAXTRAIN_PLUGINS="plugin_tasks.bn_regression", PYTHONPATH=str(TESTS)))
  return {"default": (default_dir, *_report(default)), "bn": (bn_dir, *_report(bn))}


@pytest.mark.slow
def test_default_task_resume_verified(reports):
  _, rc, report, err = reports["default"]
  assert rc == 0, (report, err[-3000:])
  assert report["match"] is True and report["fingerprints_match"] and report["curves_match"]
  assert report["interrupted_at_step"] == 30 and report["interrupted_exit_code"] == -9
  assert report["interruption_took_effect"]
  assert report["curve_rows_compared"] > 0 and report["curve_rows_differing"] == []


@pytest.mark.slow
def test_plugin_task_with_batchnorm_ema_and_spike_guard_resume_verified(reports):
  workdir, rc, report, err = reports["bn"]
  assert rc == 0, (report, err[-3000:])
  assert report["match"] is True and report["interrupted_at_step"] == 40
  assert report["fingerprint_uninterrupted"] == report["fingerprint_resumed"] is not None
  # The extra state really was there and really was compared.
  with (workdir / "interrupted" / "facts" / "scalars.csv").open(newline="") as f:
    splits = {row["split"] for row in csv.DictReader(f)}
  assert "val_ema" in splits
  ckpt = workdir / "interrupted" / "checkpoints"
  step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  state = ocp.StandardCheckpointer().restore(ckpt / str(step) / "state")
  stats = jax.tree.leaves(state["model_state"])
  assert stats and any(np.abs(np.asarray(leaf)).sum() > 0 for leaf in stats)
  means = [np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(state["model_state"])[0]
           if "mean" in jax.tree_util.keystr(k)]
  assert means and np.abs(means[0]).sum() > 0  # running mean moved away from its zero init
  assert state["ema_params"] is not None
  guard = state["guard"]
  assert int(np.asarray(guard["good_steps"])) + int(np.asarray(guard["total_skipped"])) == step


def _fake_train(fingerprints: dict[str, str], curves: dict[str, str]):
  """A stand-in for verify_resume._train that writes a summary and scalars.csv only."""
  calls = []

  def train(run_dir: Path, overrides, fault=None):
    calls.append((run_dir.name, fault))
    run_dir.mkdir(parents=True, exist_ok=True)
    if fault:
      return subprocess.CompletedProcess([], -9, "", "")
    (run_dir / "facts").mkdir(exist_ok=True)
    (run_dir / "facts" / "scalars.csv").write_text(
        "step,split,loss,steps_per_sec\n10,train," + curves[run_dir.name] + ",123\n")
    (run_dir / "summary.json").write_text(json.dumps({"final_step": 20,
                                                      "params_fingerprint": fingerprints[run_dir.name]}))
    return subprocess.CompletedProcess([], 0, "", "")

  return train, calls


def test_verify_detects_mismatch(tmp_path, monkeypatch):
  # Identical fakes match (and wall-clock columns are ignored) ...
  train, calls = _fake_train({"uninterrupted": "aaa", "interrupted": "aaa"},
                             {"uninterrupted": "0.5", "interrupted": "0.5"})
  monkeypatch.setattr(verify_resume, "_train", train)
  report = verify_resume.verify([], tmp_path / "same", at=7, kind="sigkill", seed=0)
  assert report["match"] is True
  assert calls == [("uninterrupted", None), ("interrupted", "sigkill@7"), ("interrupted", None)]

  # ... a different fingerprint does not ...
  train, _ = _fake_train({"uninterrupted": "aaa", "interrupted": "bbb"},
                         {"uninterrupted": "0.5", "interrupted": "0.5"})
  monkeypatch.setattr(verify_resume, "_train", train)
  report = verify_resume.verify([], tmp_path / "fp", at=7, kind="sigkill", seed=0)
  assert report["match"] is False and report["fingerprints_match"] is False and report["curves_match"]

  # ... nor does a different loss curve with equal fingerprints.
  train, _ = _fake_train({"uninterrupted": "aaa", "interrupted": "aaa"},
                         {"uninterrupted": "0.5", "interrupted": "0.6"})
  monkeypatch.setattr(verify_resume, "_train", train)
  report = verify_resume.verify([], tmp_path / "curve", at=7, kind="sigkill", seed=0)
  assert report["match"] is False and report["fingerprints_match"] and report["curve_rows_differing"] == [
      "train@10"]
  monkeypatch.setattr(verify_resume, "verify", lambda *a, **k: report)
  assert verify_resume.main(["--at", "7"]) == 1


def test_verify_detects_a_row_logged_twice(tmp_path, monkeypatch):
  # A replayed step logged again (same values) is a difference too.
  train, _ = _fake_train({"uninterrupted": "aaa", "interrupted": "aaa"},
                         {"uninterrupted": "0.5", "interrupted": "0.5,123\n10,train,0.5"})
  monkeypatch.setattr(verify_resume, "_train", train)
  report = verify_resume.verify([], tmp_path / "dup", at=7, kind="sigkill", seed=0)
  assert report["match"] is False and report["curve_rows_differing"] == ["train@10"]


@pytest.mark.slow
def test_default_config_as_shipped(tmp_path):
  """The command exactly as a user types it, on the default config with one device, no overrides."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-m", "jaxtrain.verify_resume", "--workdir", str(tmp_path)],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  report = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])
  assert report["match"] and report["curve_rows_compared"] > 40
  summary = json.loads((tmp_path / "uninterrupted" / "summary.json").read_text())
  assert summary["final_step"] == 2000 and summary["final_metrics"]["val/mse"] < 0.02
