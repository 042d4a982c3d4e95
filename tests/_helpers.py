"""Shared helpers for the test suite: short-run overrides, the CLI in a subprocess, run-dir readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def short_overrides(run_dir: Path | str, steps: int = 40, *extra: str) -> list[str]:
  """Overrides for a short, quiet run in `run_dir`: eval and checkpoint every 20 steps, no progress display."""
  return [f"run.dir={run_dir}", f"trainer.steps={steps}", "trainer.epochs=null", "trainer.log_every=10",
          "trainer.eval_every=20", "checkpoint.every=20", "logging.progress=none", *extra]


def reference_overrides(run_dir: Path | str) -> list[str]:
  """The shared reference run (conftest's `reference_run`): 40 steps, a checkpoint every 10 with
  keep=1 (best/last retention by val/loss, mode=min)."""
  return short_overrides(run_dir, 40, "checkpoint.every=10", "checkpoint.keep=1", "checkpoint.monitor=val/loss",
                         "checkpoint.mode=min")


def cli_env(**extra: str) -> dict[str, str]:
  """The test process's environment (8 fake CPU devices via XLA_FLAGS) plus `extra`."""
  env = dict(os.environ)
  env.update(extra)
  return env


def run_cli(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
  """`python -m jaxtrain.main *args` in `cwd`, output captured as text."""
  return subprocess.run([sys.executable, "-m", "jaxtrain.main", *args], cwd=cwd, env=env or cli_env(),
                        capture_output=True, text=True, timeout=timeout)


def read_summary(run_dir: Path) -> dict[str, Any]:
  return json.loads((Path(run_dir) / "summary.json").read_text())


def read_events(run_dir: Path) -> list[dict[str, Any]]:
  path = Path(run_dir) / "facts" / "events.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events_named(run_dir: Path, name: str) -> list[dict[str, Any]]:
  return [e for e in read_events(run_dir) if e["event"] == name]


def checkpoint_steps(run_dir: Path) -> set[int]:
  """Steps of the finished checkpoints on disk."""
  ckpt = Path(run_dir) / "checkpoints"
  return {int(p.name) for p in ckpt.iterdir() if p.name.isdigit()} if ckpt.is_dir() else set()


def cached_cli_env(cache_dir: Path | str, **extra: str) -> dict[str, str]:
  """`cli_env` plus a persistent JAX compilation cache shared by the subprocesses of a test module:
  the second and later runs of the same config skip XLA compilation (same executables, same results)."""
  return cli_env(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)
