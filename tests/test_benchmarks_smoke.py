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
  assert "| state (MB) | sync pause (ms) | Orbax async pause (ms) | snapshot pause (ms) |" in table
  row = result["rows"][0]
  assert 0.4 < row["size_mb"] < 0.6
  for mode in ("sync", "orbax_async", "snapshot"):
    assert len(row[mode]["pause_s"]) == 1 and row[mode]["finish_median_s"] > 0
  assert row["snapshot_over_sync"] == round(row["snapshot"]["pause_median_s"] / row["sync"]["pause_median_s"], 4)
  assert out.read_text().count("\n") == 1


def test_startup_table_and_speedup(monkeypatch, capsys):
  # The real runs are fresh processes (~5 s of CPU each); here they are stand-ins, so
  # what is checked is which runs share a user cache, and the ratios and table.
  startup = load("startup")
  fake = {"first": {"ready_s": 8.0, "compile_s": 1.5, "process_s": 9.0},
          "second": {"ready_s": 3.0, "compile_s": 0.3, "process_s": 4.0},
          "compile_cold": {"ready_s": 4.5, "compile_s": 1.5, "process_s": 5.5}}
  caches = {}

  def fake_run(run_dir, user_cache, steps, overrides):
    kind = run_dir.name.split("_", 2)[2]
    caches.setdefault(user_cache, []).append((kind, [o for o in overrides if "compilation_cache_dir" in o]))
    return fake[kind]

  monkeypatch.setattr(startup, "timed_run", fake_run)
  monkeypatch.setattr(startup, "import_seconds", lambda: 2.0)
  result = startup.main(["--repeats", "2"])
  table = capsys.readouterr().out
  assert "| first (every cache empty)    |               8.00 |        1.50 |" in table
  assert "| compilation cache empty" in table
  assert result["first_over_second_ready"] == round(8.0 / 3.0, 3)
  assert result["compile_cold_over_second_ready"] == 1.5 and result["compile_cold_over_second_compile"] == 5.0
  # One new user cache per repeat, shared by its three runs; only compile_cold gets its own compilation cache.
  assert len(caches) == 2
  for runs in caches.values():
    assert [kind for kind, _ in runs] == ["first", "second", "compile_cold"]
    assert [bool(extra) for _, extra in runs] == [False, False, True]


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
  assert "| pytorch        |" in table and "jaxtrain/pytorch" in result["ratio_median"]
  assert {"jaxtrain/bare", "jaxtrain/bare_same_step"} <= set(result["ratio_median"])
  assert set(result["ratio_median_ci95"]) == set(result["ratio_median"])


def test_peers_compares_with_the_bare_jit_loop_in_the_same_run(capsys, monkeypatch):
  # No torch needed: both bare jax.jit loops (the minimal step, jaxtrain's step) are always runs.
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  result = load("peers").main(["--steps", "12", "--repeats", "1", "--warmup-runs", "0", "--peers", ""])
  table = capsys.readouterr().out
  assert "| bare           |" in table and "| bare_same_step |" in table
  assert set(result["ratio_median"]) == {"jaxtrain/bare", "jaxtrain/bare_same_step"}
  for name in ("bare", "bare_same_step"):
    run = result["runs"][name][0]
    assert run["steps_per_sec"] > 0 and 0 < run["final_train_loss"] < 1


def test_overhead_reports_every_ratio_from_one_run(capsys):
  result = load("overhead").main(["--steps", "20", "--repeats", "1", "--warmup", "0"])
  table = capsys.readouterr().out
  assert "| bare jax.jit + the same evals/reads/saves |" in table
  assert "| bare loop, jaxtrain's step, same work     |" in table
  assert set(result["ratio_median"]) == {"jaxtrain/bare_same_step", "jaxtrain/jaxtrain_one_put",
                                         "jaxtrain_one_put/bare_same_step", "jaxtrain/jaxtrain_one_step_per_call",
                                         "jaxtrain_one_step_per_call/bare_same_step", "jaxtrain/bare_same_work",
                                         "jaxtrain_minimal_step/bare_same_work",
                                         "jaxtrain_no_grad_norm/bare_same_work", "jaxtrain_loop_only/bare",
                                         "jaxtrain/bare"}
  assert set(result["cpu_ratio_median"]) == set(result["ratio_median"])
  runs = result["runs"]
  assert all(runs[name][0]["compilations"] == 1 for name in runs if name.startswith("jaxtrain"))
  assert all(runs[name][0]["steps_per_sec"] > 0 and runs[name][0]["cpu_ms_per_step"] > 0 for name in runs)
  # Both hand-written loops train the same model on the same batches as jaxtrain.
  losses = [runs[name][0]["final_train_loss"] for name in ("bare_same_step", "bare_same_work", "bare")]
  assert all(0 < loss < 1 for loss in losses)


def test_overhead_runs_only_the_loops_asked_for(capsys):
  result = load("overhead").main(["--steps", "12", "--repeats", "2", "--warmup", "0",
                                  "--loops", "jaxtrain", "bare_same_step"])
  table = capsys.readouterr().out
  assert set(result["runs"]) == {"jaxtrain", "bare_same_step"} and "| bare jax.jit, train only" not in table
  assert set(result["ratio_median"]) == {"jaxtrain/bare_same_step"}
  # Each median ratio comes with a bootstrap interval around it.
  low, high = result["ratio_median_ci95"]["jaxtrain/bare_same_step"]
  assert low <= result["ratio_median"]["jaxtrain/bare_same_step"] <= high and "95 % interval" in table
  assert all(len(runs) == 2 and runs[0]["steps_per_sec"] > 0 for runs in result["runs"].values())


def test_step_cost_compares_every_part_of_the_step_with_the_hand_step(capsys):
  result = load("step_cost").main(["--alternations", "2", "--chunk", "3", "--warmup", "2"])
  table = capsys.readouterr().out
  rows = result["rows"]
  assert list(rows) == ["hand", "hand_mesh_put", "jaxtrain_minimal", "jaxtrain_guard", "jaxtrain_default"]
  assert rows["hand"]["speed_vs_hand_wall"] == 1.0 and "| jaxtrain_default  |" in table
  assert all(row["steps_per_sec_median"] > 0 and row["bytes_accessed"] > 0 for row in rows.values())
  # XLA's account of each executable: the guard's lax.cond changes what the step reads and writes.
  assert all(row["hlo_copies"] >= 0 for row in rows.values())
  assert rows["jaxtrain_guard"]["bytes_accessed"] != rows["jaxtrain_minimal"]["bytes_accessed"]


def test_peers_lm_trains_the_same_transformer_in_pytorch(capsys, monkeypatch):
  pytest.importorskip("torch")
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  peers_lm = load("peers_lm")
  result = peers_lm.main(["--steps", "6", "--warmup-steps", "2", "--repeats", "1", "--warmup-runs", "0",
                          "--device", "cpu", "--override", "trainer.eval_every=6", "--override", "checkpoint.every=6"])
  table = capsys.readouterr().out
  assert "| pytorch          |" in table and set(result["ratio_median"]) == {"jaxtrain/pytorch"}
  # The same network: the task's own parameter count (checked by the script before timing).
  assert result["params"] == 147_776
  for name in ("jaxtrain", "pytorch"):
    run = result["runs"][name][0]
    assert run["tokens_per_sec"] > 0 and run["mfu"] is None  # a CPU has no known peak
  # From the same initialisation scale, a few steps from a uniform guess over 256 bytes (ln 256 = 5.55).
  assert 3.0 < result["runs"]["pytorch"][0]["final_train_loss"] < 5.6


@pytest.mark.parametrize("variant", [
    dict(positions="learned", mlp="gelu", norm="layer", tie_embeddings=False),
    dict(positions="rope", mlp="swiglu", norm="rms", tie_embeddings=True),
])
def test_the_pytorch_transformer_has_the_lm_tasks_param_count_in_every_variant(variant):
  pytest.importorskip("torch")
  from jaxtrain.models.transformer import TransformerShape, count_params

  shape = TransformerShape(seq_len=32, d_model=48, n_layers=3, n_heads=4, d_ff=96, **variant)
  assert load("peers_lm").torch_param_count(shape) == count_params(shape)["total"]


def test_the_pytorch_rope_rotates_as_the_lm_tasks():
  torch = pytest.importorskip("torch")
  import jax.numpy as jnp
  import numpy as np

  from jaxtrain.models.transformer import rope

  x = np.random.default_rng(0).normal(size=(2, 7, 3, 8)).astype(np.float32)  # [B, T, H, D]
  expected = np.asarray(rope(jnp.asarray(x), jnp.arange(7)))
  got = load("peers_lm").torch_rope(torch.from_numpy(x).permute(0, 2, 1, 3)).permute(0, 2, 1, 3).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_loop_breakdown_times_every_part_of_the_loop(capsys):
  result = load("loop_breakdown").main(["--steps", "30", "--repeats", "1"])
  table = capsys.readouterr().out
  parts = result["us_per_step_median"]
  assert {"next", "step", "Evaluate", "SaveCheckpoint", "waiting on the window, rest"} <= set(parts)
  assert "| next " in table and result["steps_per_sec_median"] > 0
  # The parts add up to the loop's own clock.
  assert sum(parts.values()) == pytest.approx(result["loop_us_per_step_median"], rel=0.01)
  assert 0 < result["loop_thread_cpu_us_per_step_median"] <= result["process_cpu_us_per_step_median"]
  import jaxtrain.api
  from jaxtrain import loop
  assert jaxtrain.api.fit is loop.fit  # the timing wrappers are gone once the runs end


def test_gc_startup_reports_every_collection_of_a_command_line_run(capsys):
  result = load("gc_startup").main(["--repeats", "1", "--steps", "2", "--slow-ms", "0"])
  process = result["processes"][0]
  assert sum(process["collections"].values()) > 0 and result["gc_seconds_median"] > 0
  # With no threshold every collection is listed, each with the jaxtrain code it interrupted.
  assert len(process["slow"]) == sum(process["collections"].values())
  assert "median:" in capsys.readouterr().out


def test_the_median_interval_widens_with_the_spread_of_the_repeats():
  median_ci95 = load("overhead").median_ci95
  assert median_ci95([0.95] * 9) == (0.95, 0.95)
  narrow = median_ci95([0.94, 0.95, 0.96] * 5)
  wide = median_ci95([0.7, 0.95, 1.2] * 5)
  assert wide[0] < narrow[0] <= 0.95 <= narrow[1] < wide[1]
