"""The default task on 1, 2, 4 and 8 fake CPU devices: steps/s, and the same result as on one device.

One `python -m jaxtrain.main` subprocess per device count, with
XLA_FLAGS=--xla_force_host_platform_device_count=N (the default mesh is then
data-parallel over N devices, the global batch stays 256). From each run's
summary.json: `train_steps_per_sec`, the final `val/loss` and `params_fingerprint`,
compared with the 1-device run of the same repeat.

On a CPU the N "devices" share the same cores, so steps/s does not grow with N: this
benchmark checks that data parallelism computes the same training (and shows what
the per-device split and the collectives cost on one host), not speed-up. The
fingerprint is bitwise only where the reduction order is the same; across device
counts the gradient sums are split differently, so the check is the final val loss
within a relative tolerance (`--rtol`).

    python benchmarks/scaling.py --steps 1000 --repeats 3 --out benchmarks/results/scaling.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info, result_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_on(devices: int, steps: int, run_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
  """One run of the default task on `devices` fake CPU devices; its summary figures."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
  env["JAX_PLATFORMS"] = "cpu"
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  args = [sys.executable, "-m", "jaxtrain.main", f"trainer.steps={steps}", "trainer.epochs=null",
          "logging.progress=none", f"run.dir={run_dir}", "trainer.compilation_cache_dir=''", *overrides]
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"run on {devices} devices failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  s = json.loads((run_dir / "summary.json").read_text())
  assert s["devices"] == devices, s["devices"]
  return {"devices": devices, "mesh": s["mesh"], "steps_per_sec": s["train_steps_per_sec"],
          "val_loss": s["final_metrics"]["val/loss"], "fingerprint": s["params_fingerprint"],
          "compile_seconds": s["compile_seconds"]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--devices", default="1,2,4,8", help="device counts (default 1,2,4,8; 1 comes first)")
  parser.add_argument("--steps", type=int, default=1000, help="train steps per run (default 1000)")
  parser.add_argument("--repeats", type=int, default=3, help="runs per device count (default 3)")
  parser.add_argument("--rtol", type=float, default=1e-3, help="allowed relative val-loss difference to 1 device")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="extra jaxtrain config override (repeatable)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)
  counts = sorted(int(n) for n in args.devices.split(","))

  machine = machine_info()
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, python {machine['python']}, "
        f"jax {machine['jax']}")
  print(f"load average at start: {machine['loadavg_at_start']}")
  print(f"workload: default task (ae-digits, global batch 256), {args.steps} steps, devices {counts}, "
        f"{args.repeats} repeats")

  runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
  with tempfile.TemporaryDirectory(prefix="jaxtrain_scaling_") as tmp:
    for r in range(args.repeats):
      order = counts if r % 2 == 0 else counts[::-1]  # drifting machine load hits all counts alike
      for n in order:
        res = run_on(n, args.steps, Path(tmp) / f"run_{r}_{n}", args.override)
        runs[n].append(res)
        print(f"  repeat {r + 1}/{args.repeats}  {n} device(s)  {res['steps_per_sec']:8.1f} steps/s  "
              f"val/loss {res['val_loss']:.6g}  fingerprint {res['fingerprint'][:12]}")

  base = runs[counts[0]]
  rows = []
  for n in counts:
    rel = [abs(a["val_loss"] - b["val_loss"]) / abs(b["val_loss"]) for a, b in zip(runs[n], base)]
    rows.append({
        "devices": n,
        "steps_per_sec_median": round(statistics.median(x["steps_per_sec"] for x in runs[n]), 1),
        "speed_ratio_median": round(statistics.median(a["steps_per_sec"] / b["steps_per_sec"]
                                                      for a, b in zip(runs[n], base)), 3),
        "val_loss": runs[n][0]["val_loss"],
        "val_loss_rel_diff_max": max(rel),
        "fingerprint_equal": all(a["fingerprint"] == b["fingerprint"] for a, b in zip(runs[n], base)),
        "deterministic": len({x["fingerprint"] for x in runs[n]}) == 1,
        "within_rtol": max(rel) <= args.rtol,
    })
  result = {
      **result_record("scaling", machine),
      "workload": "ae-digits",
      "steps": args.steps,
      "repeats": args.repeats,
      "rtol": args.rtol,
      "overrides": args.override,
      "rows": rows,
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
      "runs": {str(n): v for n, v in runs.items()},
  }
  print()
  print(f"| devices | median steps/s | ratio to {counts[0]} | final val/loss | rel. diff to {counts[0]} "
        "| same fingerprint | same on rerun |")
  print("|--------:|---------------:|-----------:|---------------:|--------------:|:----------------:|:-------------:|")
  for row in rows:
    print(f"| {row['devices']:7d} | {row['steps_per_sec_median']:14.1f} | {row['speed_ratio_median']:10.3f} | "
          f"{row['val_loss']:14.6g} | {row['val_loss_rel_diff_max']:13.2e} | "
          f"{'yes' if row['fingerprint_equal'] else 'no':^16s} | {'yes' if row['deterministic'] else 'no':^13s} |")
  ok = all(row["within_rtol"] for row in rows)
  print(f"val/loss within rtol {args.rtol:g} of {counts[0]} device(s): {'yes' if ok else 'NO'}")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
