"""Start-up time of the default task: a first run on a fresh machine, the second run, and a cold compilation cache.

Each repeat makes a new, empty user cache folder (XDG_CACHE_HOME: JAX's persistent
compilation cache and jaxtrain's generated-data cache live there by default) and
starts `python -m jaxtrain.main` three times in fresh subprocesses:

- first: every cache empty, as on a fresh machine (compiles the steps, builds the
  data cache);
- second: the same command again, every cache filled by the first run;
- compile_cold: data cache filled, but `trainer.compilation_cache_dir` pointed at a
  new empty folder: what the compilation cache alone saves.

For each run:

- ready_s: seconds from spawning the process to its `on_start` event in
  facts/events.jsonl, written once the train and eval steps are compiled, just
  before step 1 runs (imports, Hydra, data, model init, compilation);
- compile_s: `compile_seconds` from summary.json (lowering and compiling the
  train and eval steps);
- process_s: the whole process, to exit (a few steps, an eval, a checkpoint).

A fourth process, `python -c "import jaxtrain.api"`, gives the import floor that
no cache can remove. Ratios are per repeat (first/second, compile_cold/second),
then the median.

    python benchmarks/startup.py --repeats 5 --out benchmarks/results/startup.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info, result_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KINDS = ("first", "second", "compile_cold")


def _env() -> dict[str, str]:
  env = dict(os.environ)
  # The jaxtrain next to this script, whatever is installed.
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
  return env


def timed_run(run_dir: Path, user_cache: Path, steps: int, overrides: Sequence[str]) -> dict[str, Any]:
  """One `python -m jaxtrain.main` in a fresh process with `user_cache` as XDG_CACHE_HOME."""
  args = [sys.executable, "-m", "jaxtrain.main", f"trainer.steps={steps}", "trainer.epochs=null",
          "logging.progress=none", f"run.dir={run_dir}", *overrides]
  env = dict(_env(), XDG_CACHE_HOME=str(user_cache))
  env.pop("JAXTRAIN_CACHE_DIR", None)  # the data cache goes under XDG_CACHE_HOME too
  spawned = time.time()
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
  process_s = time.time() - spawned
  if proc.returncode != 0:
    raise RuntimeError(f"jaxtrain run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  events = [json.loads(line) for line in (run_dir / "facts" / "events.jsonl").read_text().splitlines()]
  on_start = next(e for e in events if e["event"] == "on_start")
  summary = json.loads((run_dir / "summary.json").read_text())
  return {"ready_s": round(on_start["time"] - spawned, 3), "compile_s": summary["compile_seconds"],
          "process_s": round(process_s, 3)}


def import_seconds() -> float:
  spawned = time.time()
  subprocess.run([sys.executable, "-c", "import jaxtrain.api"], cwd=REPO, env=_env(), check=True)
  return round(time.time() - spawned, 3)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5, help="repeats, each with a new user cache folder (default 5)")
  parser.add_argument("--steps", type=int, default=20,
                      help="train steps per run (default 20: two calls of ten steps, the executable the default run uses)")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="extra jaxtrain config override (repeatable)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)

  machine = machine_info()
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, python {machine['python']}, "
        f"jax {machine['jax']}")
  print(f"load average at start: {machine['loadavg_at_start']}")
  print(f"workload: default task (ae-digits), {args.steps} steps per run, {args.repeats} repeats of 3 runs"
        + (f", overrides {args.override}" if args.override else ""))

  runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in (*KINDS, "import")}
  with tempfile.TemporaryDirectory(prefix="jaxtrain_startup_") as tmp:
    for r in range(args.repeats):
      user_cache = Path(tmp) / f"user_cache_{r}"
      for kind in KINDS:
        extra = [f"trainer.compilation_cache_dir={Path(tmp) / f'compile_cache_{r}'}"] if kind == "compile_cold" else []
        res = timed_run(Path(tmp) / f"run_{r}_{kind}", user_cache, args.steps, [*args.override, *extra])
        runs[kind].append(res)
        print(f"  repeat {r + 1}/{args.repeats}  {kind:12s}  ready {res['ready_s']:6.2f} s  "
              f"compile {res['compile_s']:5.2f} s  process {res['process_s']:6.2f} s")
      runs["import"].append({"import_s": import_seconds()})

  def med(kind: str, key: str) -> float:
    return round(statistics.median(r[key] for r in runs[kind]), 3)

  def ratio(kind: str, key: str) -> float:
    return round(statistics.median(a[key] / max(b[key], 1e-3) for a, b in zip(runs[kind], runs["second"])), 3)

  result = {
      **result_record("startup", machine),
      "workload": "ae-digits",
      "steps": args.steps,
      "repeats": args.repeats,
      "overrides": args.override,
      "median": {kind: {key: med(kind, key) for key in runs[kind][0]} for kind in runs},
      "first_over_second_ready": ratio("first", "ready_s"),
      "compile_cold_over_second_ready": ratio("compile_cold", "ready_s"),
      "compile_cold_over_second_compile": ratio("compile_cold", "compile_s"),
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
      "runs": runs,
  }
  print()
  print("| run                          | time to step 1 (s) | compile (s) | whole process (s) |")
  print("|------------------------------|-------------------:|------------:|------------------:|")
  for kind, label in (("first", "first (every cache empty)"), ("second", "second (caches filled)"),
                      ("compile_cold", "compilation cache empty")):
    print(f"| {label:28s} | {med(kind, 'ready_s'):18.2f} | {med(kind, 'compile_s'):11.2f} | "
          f"{med(kind, 'process_s'):17.2f} |")
  print(f"| {'import jaxtrain.api':28s} | {med('import', 'import_s'):18.2f} |             |                   |")
  print(f"median per-repeat ratio of time to step 1: first/second {result['first_over_second_ready']:.2f}x, "
        f"compilation-cache-cold/second {result['compile_cold_over_second_ready']:.2f}x "
        f"(compile {result['compile_cold_over_second_compile']:.2f}x)")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
