"""Each script in benchmarks/ runs in its smallest mode and prints its table.

checkpoint and peers run for real (peers only with torch installed); start-up and scaling
time fresh processes, too dear for the suite, so their runs are stand-ins and the
aggregation and tables are what is checked. Figures are not asserted: timings on a
shared CPU are noise at this size.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
  """benchmarks/<name>.py as a module (benchmarks/ is scripts, not a package)."""
  sys.path.insert(0, str(BENCHMARKS))  # the scripts import their shared helpers from overhead.py
  try:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  finally:
    sys.path.remove(str(BENCHMARKS))


def test_checkpoint_prints_blocking_table(tmp_path, capsys):
  out = tmp_path / "checkpoint.jsonl"
  result = load("checkpoint").main(["--sizes-mb", "0.5", "--saves", "1", "--out", str(out)])
  table = capsys.readouterr().out
  assert "| state (MB) | sync blocks (ms) | async blocks (ms) |" in table
  row = result["rows"][0]
  assert 0.4 < row["size_mb"] < 0.6 and row["sync"]["blocking_s"] and row["async"]["finish_s"]
  assert out.read_text().count("\n") == 1


def test_startup_table_and_speedup(monkeypatch, capsys):
  # The real runs are fresh processes (~5 s of CPU each); here they are stand-ins, so
  # what is checked is the pairing of cold and warm runs and the table.
  startup = load("startup")
  fake = {"cold": {"ready_s": 6.0, "compile_s": 1.5, "process_s": 7.0},
          "warm": {"ready_s": 3.0, "compile_s": 0.3, "process_s": 4.0}}
  monkeypatch.setattr(startup, "timed_run", lambda run_dir, cache_dir, steps, overrides: fake[run_dir.name[-4:]])
  monkeypatch.setattr(startup, "import_seconds", lambda: 2.0)
  result = startup.main(["--repeats", "2"])
  table = capsys.readouterr().out
  assert "| cold (empty cache)   |               6.00 |        1.50 |" in table
  assert "| warm (cache filled)" in table
  assert result["ready_speedup_median"] == 2.0 and result["compile_speedup_median"] == 5.0


def test_scaling_table_flags_a_different_loss(monkeypatch, capsys):
  scaling = load("scaling")

  def fake_run(devices, steps, run_dir, overrides):
    return {"devices": devices, "mesh": {"data": devices}, "steps_per_sec": 100.0 / devices,
            "val_loss": 0.5 if devices < 4 else 0.6, "fingerprint": "ab" if devices == 1 else "cd",
            "compile_seconds": 1.0}

  monkeypatch.setattr(scaling, "run_on", fake_run)
  result = scaling.main(["--devices", "1,2,4", "--repeats", "1"])
  table = capsys.readouterr().out
  assert "| devices | median steps/s |" in table and "within rtol 0.001 of 1 device(s): NO" in table
  rows = {row["devices"]: row for row in result["rows"]}
  assert rows[2]["within_rtol"] and not rows[4]["within_rtol"] and rows[2]["speed_ratio_median"] == 0.5
  assert rows[1]["fingerprint_equal"] and not rows[2]["fingerprint_equal"]


def test_peers_prints_ratio_table(capsys, monkeypatch):
  pytest.importorskip("torch")
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the script appends its thread flags
  result = load("peers").main(["--steps", "12", "--warmup-steps", "2", "--repeats", "1", "--warmup-runs", "0",
                                  "--peers", "pytorch"])
  table = capsys.readouterr().out
  assert "| pytorch    |" in table and "jaxtrain/pytorch" in result["ratio_median"]
