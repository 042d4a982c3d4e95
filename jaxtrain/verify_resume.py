"""`python -m jaxtrain.verify_resume [options] [overrides...]`: prove that an
interrupted and resumed run is the run that would have happened.

Trains the config once uninterrupted, then again with an injected interruption
at a chosen (or random) step followed by a plain resume in the same run
directory, and compares the final params fingerprints and the logged loss and
metric curves. Exit code 0 when both match, 1 when they differ.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from jaxtrain.faults import FAULT_ENV, FAULT_KINDS

IGNORED_COLUMNS = {"steps_per_sec", "epoch_time_s", "max_memory_mib", "input_wait_frac", "tokens_per_sec",
                   "mfu"}  # wall-clock figures


def _train(run_dir: Path, overrides: Sequence[str], fault: str | None = None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
  if fault:
    env[FAULT_ENV] = fault
  command = [sys.executable, "-m", "jaxtrain.main", *overrides, f"run.dir={run_dir}", "logging.progress=none"]
  return subprocess.run(command, env=env, capture_output=True, text=True)


def _curves(run_dir: Path) -> dict[tuple[str, str], list[list[str]]]:
  """(split, step) -> the values of every row logged for it, without wall-clock columns.

  A list per key, so a row logged twice (a replayed step) shows up as a difference.
  """
  with (run_dir / "facts" / "scalars.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  curves: dict[tuple[str, str], list[list[str]]] = {}
  for r in rows:
    curves.setdefault((r["split"], r["step"]), []).append(
        [v for k, v in sorted(r.items()) if k not in IGNORED_COLUMNS])
  return curves


def _fingerprint(run_dir: Path) -> str | None:
  path = run_dir / "summary.json"
  return json.loads(path.read_text())["params_fingerprint"] if path.exists() else None


def verify(overrides: Sequence[str], workdir: Path, at: int | None, kind: str, seed: int) -> dict:
  """Runs both variants; returns a report dict with `match` True/False."""
  reference_dir, resumed_dir = workdir / "uninterrupted", workdir / "interrupted"
  reference = _train(reference_dir, overrides)
  if reference.returncode != 0:
    raise RuntimeError(f"the uninterrupted run failed:\n{reference.stderr[-3000:]}")
  final_step = json.loads((reference_dir / "summary.json").read_text())["final_step"]
  if at is None:
    at = random.Random(seed).randint(1, max(1, final_step - 1))
  interrupted = _train(resumed_dir, overrides, fault=f"{kind}@{at}")
  interrupted_ok = interrupted.returncode != 0 and not (resumed_dir / "summary.json").exists()
  resumed = _train(resumed_dir, overrides)
  if resumed.returncode != 0:
    raise RuntimeError(f"the resumed run failed:\n{resumed.stderr[-3000:]}")
  want, got = _curves(reference_dir), _curves(resumed_dir)
  differing = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
  report = {
      "interrupted_at_step": at,
      "interruption": kind,
      "interrupted_exit_code": interrupted.returncode,
      "interruption_took_effect": interrupted_ok,
      "fingerprint_uninterrupted": _fingerprint(reference_dir),
      "fingerprint_resumed": _fingerprint(resumed_dir),
      "curve_rows_compared": len(want),
      "curve_rows_differing": [f"{split}@{step}" for split, step in differing[:20]],
  }
  report["fingerprints_match"] = report["fingerprint_uninterrupted"] == report["fingerprint_resumed"]
  report["curves_match"] = not differing
  report["match"] = report["fingerprints_match"] and report["curves_match"] and interrupted_ok
  return report


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxtrain.verify_resume", description=__doc__.splitlines()[0])
  parser.add_argument("--at", type=int, default=None, help="interrupt after this step (default: random)")
  parser.add_argument("--kind", choices=FAULT_KINDS, default="sigkill", help="how to interrupt")
  parser.add_argument("--seed", type=int, default=0, help="seed for the random interruption step")
  parser.add_argument("--workdir", type=Path, default=None, help="keep both runs here (default: a temp dir)")
  parser.add_argument("overrides", nargs="*", help="jaxtrain overrides, as for python -m jaxtrain.main")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory(prefix="verify_resume_") as tmp:
    workdir = args.workdir or Path(tmp)
    report = verify(args.overrides, workdir, args.at, args.kind, args.seed)
  print(json.dumps(report, indent=2))
  print("resume verified: identical params and curves" if report["match"] else "resume MISMATCH")
  return 0 if report["match"] else 1


if __name__ == "__main__":
  sys.exit(main())
