"""Python's garbage collections during a start of the command line, and where the slow ones happen.

Runs `python -m jaxtrain.main` (the default task, a few steps) in fresh processes with a
`gc.callbacks` hook installed before jaxtrain is imported, and reports per process the
collections of each generation, their total time, and every collection over
`--slow-ms` with the jaxtrain frame it interrupted. Run it twice first (or after
`benchmarks/startup.py`) so that the compilation cache is warm, as in a second run.

    python benchmarks/gc_startup.py --repeats 3 --out benchmarks/results/gc_startup.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info, result_record  # noqa: E402

# Runs in the child: the hook is installed before anything of jaxtrain is imported.
CHILD = r"""
import gc, json, runpy, sys, time
start, began, out_path, slow_ms = time.perf_counter(), [0.0], sys.argv[1], float(sys.argv[2])
totals = {g: [0, 0.0] for g in range(3)}
slow = []

def where() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/jaxtrain/" in name and "site-packages" not in name:
            return f"{name.rsplit('/jaxtrain/', 1)[1]}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "outside jaxtrain"

def hook(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
        return
    seconds = time.perf_counter() - began[0]
    totals[info["generation"]][0] += 1
    totals[info["generation"]][1] += seconds
    if seconds * 1e3 >= slow_ms:
        slow.append({"at_s": round(began[0] - start, 3), "generation": info["generation"],
                     "ms": round(seconds * 1e3, 1), "in": where()})

gc.callbacks.append(hook)
sys.argv = ["jaxtrain.main", *sys.argv[3:]]
try:
    runpy.run_module("jaxtrain.main", run_name="__main__")
finally:
    with open(out_path, "w") as f:
        json.dump({"collections": {g: n for g, (n, _) in totals.items()},
                   "seconds": {g: round(s, 4) for g, (_, s) in totals.items()},
                   "process_s": round(time.perf_counter() - start, 3), "slow": slow}, f)
"""


def one_process(steps: int, slow_ms: float, workdir: Path) -> dict[str, Any]:
  out = workdir / "gc.json"
  args = [sys.executable, "-c", CHILD, str(out), str(slow_ms), f"trainer.steps={steps}", "logging.progress=none",
          f"run.root={workdir / 'runs'}"]
  proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=600)
  if proc.returncode != 0:
    raise RuntimeError(f"the run failed: {proc.stderr[-2000:]}")
  return json.loads(out.read_text())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3, help="processes (default 3)")
  parser.add_argument("--steps", type=int, default=5, help="train steps per run (default 5)")
  parser.add_argument("--slow-ms", type=float, default=10.0, help="list collections at least this long (default 10)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)

  processes = []
  with tempfile.TemporaryDirectory(prefix="jaxtrain_gc_") as tmp:
    for r in range(args.repeats):
      workdir = Path(tmp) / f"p{r}"
      workdir.mkdir()
      processes.append(one_process(args.steps, args.slow_ms, workdir))
      p = processes[-1]
      print(f"  process {r + 1}/{args.repeats}: collections {p['collections']}, "
            f"{sum(p['seconds'].values()):.3f} s in all of {p['process_s']:.2f} s")
      for s in p["slow"]:
        print(f"    at {s['at_s']:6.2f} s  generation {s['generation']}  {s['ms']:6.1f} ms  in {s['in']}")

  total = statistics.median(sum(p["seconds"].values()) for p in processes)
  process = statistics.median(p["process_s"] for p in processes)
  print(f"median: {total:.3f} s of garbage collection in a {process:.2f} s process")
  result = {**result_record("gc_startup", machine_info()), "steps": args.steps, "repeats": args.repeats,
            "gc_seconds_median": round(total, 4), "process_seconds_median": round(process, 3),
            "processes": processes}
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
