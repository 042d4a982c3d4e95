"""Run directories: safe names, default locations, and what counts as an existing run."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

RUNS_SUBDIR = "runs"
MULTIRUNS_SUBDIR = "multiruns"
FACTS_DIR = "facts"
CHECKPOINTS_DIR = "checkpoints"
SUMMARY_FILE = "summary.json"


def safe_name(name: str | None) -> str:
  """A run name reduced to [A-Za-z0-9._-] with no leading dots: never a path."""
  cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name or "")).strip("-.")
  return cleaned[:80] or "run"


def timestamp() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def default_run_dir(root: str, name: str) -> str:
  """outputs/runs/run_<YYYYmmdd-HHMMSS>_<name>"""
  return str(Path(root) / RUNS_SUBDIR / f"run_{timestamp()}_{safe_name(name)}")


def run_dir_for(run_dir: str | None, root: str, name: str) -> str:
  """`run.dir` when given, else the generated default."""
  return run_dir if run_dir else default_run_dir(root, name)


def sweep_dir_for(root: str, name: str) -> str:
  """outputs/multiruns/exp_<YYYYmmdd-HHMMSS>_<name>"""
  return str(Path(root) / MULTIRUNS_SUBDIR / f"exp_{timestamp()}_{safe_name(name)}")


def holds_run(path: Path) -> bool:
  """True when `path` already has results of a run (not just Hydra's .hydra folder)."""
  return any((path / entry).exists() for entry in (CHECKPOINTS_DIR, FACTS_DIR, SUMMARY_FILE))
