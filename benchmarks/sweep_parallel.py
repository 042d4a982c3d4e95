"""Wall time of one sweep with `sweep.n_jobs=1` against `sweep.n_jobs=2` worker processes.

Both modes run the same study: the same fixed trials, enqueued before the sweep starts
(`study.enqueue_trial`, so the sampler never chooses), no pruning, the same trial
length. Each sweep is the real command, `python -m jaxtrain.sweep`, in a subprocess,
timed from start to exit (imports, compilation, every trial, the report). JAX's
persistent compilation cache is off, so neither mode compiles from the other's cache.
The modes alternate `--repeats` times; the medians and their ratio are printed.

    python benchmarks/sweep_parallel.py --repeats 3 --steps 200 --out benchmarks/results/sweep_parallel.jsonl

Each worker process runs XLA with its own thread pool on the same cores, so the speed-up
says how much of a trial is not already using every core (start-up, Python, small kernels).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info, result_record  # noqa: E402  (the same machine record as the other benchmarks)

LRS = (1e-3, 3e-3)
WEIGHT_DECAYS = (1e-5, 1e-4)


def sweep_overrides(sweep_dir: Path, n_jobs: int, steps: int, trials: int) -> list[str]:
  return [f"sweep.dir={sweep_dir}", f"sweep.n_trials={trials}", f"sweep.n_jobs={n_jobs}", "sweep.pruner=none",
          "sweep.seed=0", f"trainer.steps={steps}", "trainer.eval_every=100", "checkpoint.every=100",
          "trainer.compilation_cache_dir=''"]


def run_once(root: Path, n_jobs: int, steps: int, index: int) -> dict[str, Any]:
  """One sweep of the fixed trials with `n_jobs` workers; its wall time and trial states."""
  from jaxtrain.sweep import plan_sweep
  from jaxtrain.sweeps.study import load_study

  trials = list(itertools.product(LRS, WEIGHT_DECAYS))
  overrides = sweep_overrides(root / f"sweep_{index}_jobs{n_jobs}", n_jobs, steps, len(trials))
  study = load_study(plan_sweep(overrides))
  for lr, weight_decay in trials:
    study.enqueue_trial({"optim.lr": lr, "optim.weight_decay": weight_decay})
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user gets
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "-m", "jaxtrain.sweep", *overrides], env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    raise SystemExit(f"sweep with n_jobs={n_jobs} failed:\n{done.stderr[-3000:]}")
  states = [t.state.name for t in load_study(plan_sweep(overrides)).trials]
  return {"n_jobs": n_jobs, "seconds": round(seconds, 2), "states": states}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=200, help="training steps of each trial")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)

  runs = []
  with tempfile.TemporaryDirectory(prefix="sweep-parallel-") as tmp:
    for index in range(args.repeats):
      for n_jobs in (1, 2):
        runs.append(run_once(Path(tmp), n_jobs, args.steps, index))
        print(f"repeat {index}: n_jobs={n_jobs}: {runs[-1]['seconds']:.1f} s, trials {runs[-1]['states']}",
              flush=True)
  median = {n: statistics.median(r["seconds"] for r in runs if r["n_jobs"] == n) for n in (1, 2)}
  result = {**result_record("sweep_parallel", machine_info()),
            "trials": len(LRS) * len(WEIGHT_DECAYS), "steps": args.steps, "repeats": args.repeats,
            "median_seconds": {f"n_jobs={n}": round(s, 2) for n, s in median.items()},
            "speedup": round(median[1] / median[2], 3), "runs": runs}
  print(f"median wall time: n_jobs=1 {median[1]:.1f} s, n_jobs=2 {median[2]:.1f} s; "
        f"speed-up {result['speedup']:.2f}x ({result['trials']} trials of {args.steps} steps)")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
