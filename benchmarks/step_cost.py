"""What each part of jaxtrain's default train step costs, against the minimal hand-written step.

The loops of benchmarks/overhead.py time whole runs, where the step and the loop
around it are measured together. This script times the compiled steps alone, in one
process, in short interleaved chunks (`--chunk` steps each, `--alternations` times),
each step on a batch gathered from host memory and put on the device as in a run:

- hand: the minimal step a user would write (`jax.jit`, the task's loss and AdamW),
  batches put on the default device;
- hand_mesh_put: the same step, batches put with the mesh's batch `NamedSharding`, as
  jaxtrain puts them;
- jaxtrain_minimal: jaxtrain's compiled step with `trainer.grad_norm=false
  trainer.skip_nonfinite=false`: the same work as the hand step, in jaxtrain's
  TrainState (step counter, PRNG key, guard statistics) with its metrics;
- jaxtrain_guard: plus the non-finite guard (`trainer.grad_norm=false`): the update
  runs under `lax.cond` on the loss being finite;
- jaxtrain_default: plus the gradients' global norm, which the guard also checks
  (the default step).

Per chunk it records wall time and process CPU time; the figures are medians of the
per-alternation ratios to `hand` (higher is faster; 1.0 = as fast as the hand step).
It also prints XLA's own account of each executable (`cost_analysis`: bytes accessed;
copies in the optimised HLO).

    python benchmarks/step_cost.py --alternations 60 --out benchmarks/results/step_cost.jsonl
    python benchmarks/step_cost.py --threads 1 --alternations 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import BareLoop, append_result, result_record, start_machine  # noqa: E402

# Config overrides of each jaxtrain variant, in the order the parts are added.
JAXTRAIN_VARIANTS = {
    "jaxtrain_minimal": ["trainer.grad_norm=false", "trainer.skip_nonfinite=false"],
    "jaxtrain_guard": ["trainer.grad_norm=false"],
    "jaxtrain_default": [],
}


class StepVariant:
  """One compiled step, its state and a way to put a batch, ready to be stepped."""

  def __init__(self, loop: BareLoop):
    import jax

    self.loop = loop
    self.state = loop.init_state(jax.random.PRNGKey(loop.seed))
    self.executable = None

  def hlo_facts(self, batch: Any) -> dict[str, Any]:
    """Bytes accessed and copies of the compiled step, as XLA reports them."""
    # jaxtrain's step is already compiled; the hand step is a jax.jit function.
    compiled = self.loop.compiled_step or self.loop.step_fn.lower(self.state, batch).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return {"bytes_accessed": analysis.get("bytes accessed"), "hlo_copies": compiled.as_text().count(" copy(")}

  def run(self, start: int, count: int) -> tuple[float, float]:
    """Steps `count` batches from position `start`; returns (wall, process CPU) seconds."""
    import jax

    wall, cpu = time.perf_counter(), time.process_time()
    state = self.state
    for i in range(start, start + count):
      state, loss = self.loop.step_fn(state, self.loop.batch(i))
    jax.block_until_ready(state)
    self.state = state
    return time.perf_counter() - wall, time.process_time() - cpu


def build_variants(overrides: Sequence[str]) -> dict[str, StepVariant]:
  jaxtrain_variants = {name: StepVariant(BareLoop(1, [*overrides, *extra], step="jaxtrain"))
                       for name, extra in JAXTRAIN_VARIANTS.items()}
  mesh_put = BareLoop(1, overrides)
  mesh_put.batch_sharding = jaxtrain_variants["jaxtrain_default"].loop.batch_sharding  # the run's batch layout
  return {"hand": StepVariant(BareLoop(1, overrides)), "hand_mesh_put": StepVariant(mesh_put), **jaxtrain_variants}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--chunk", type=int, default=100, help="steps per timed chunk (default 100)")
  parser.add_argument("--alternations", type=int, default=60,
                      help="times every variant runs one chunk, order alternating (default 60)")
  parser.add_argument("--warmup", type=int, default=20, help="untimed steps of each variant first (default 20)")
  parser.add_argument("--threads", type=int, default=None, help="XLA compute threads (default: XLA's choice)")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="extra jaxtrain config override for every variant (repeatable)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)
  machine = start_machine(args.threads)
  variants = build_variants(args.override)
  names = list(variants)
  facts = {}
  for name, variant in variants.items():
    facts[name] = variant.hlo_facts(variant.loop.batch(0))
    variant.run(0, args.warmup)  # compiled, caches warm, allocator settled
  wall: dict[str, list[float]] = {name: [] for name in names}
  cpu: dict[str, list[float]] = {name: [] for name in names}
  position = args.warmup
  for a in range(args.alternations):
    # Alternate the order, so drifting machine speed hits every variant alike.
    for name in (names if a % 2 == 0 else names[::-1]):
      w, c = variants[name].run(position, args.chunk)
      wall[name].append(w)
      cpu[name].append(c)
    position += args.chunk

  def speed(times: dict[str, list[float]], name: str) -> float:
    return round(statistics.median(h / t for h, t in zip(times["hand"], times[name])), 3)

  rows = {name: {"steps_per_sec_median": round(args.chunk / statistics.median(wall[name]), 1),
                 "speed_vs_hand_wall": speed(wall, name), "speed_vs_hand_cpu": speed(cpu, name), **facts[name]}
          for name in names}
  result = {
      **result_record("step_cost", machine),
      "workload": "ae-digits",
      "chunk": args.chunk,
      "alternations": args.alternations,
      "threads": args.threads,
      "overrides": args.override,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "rows": rows,
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
  }
  print()
  print("| step              | median steps/s | speed vs hand (wall) | (process CPU) | bytes accessed | HLO copies |")
  print("|-------------------|---------------:|---------------------:|--------------:|---------------:|-----------:|")
  for name, row in rows.items():
    print(f"| {name:17s} | {row['steps_per_sec_median']:14.1f} | {row['speed_vs_hand_wall']:20.3f} "
          f"| {row['speed_vs_hand_cpu']:13.3f} | {row['bytes_accessed'] or 0:14,.0f} | {row['hlo_copies']:10d} |")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
