"""Where a jaxtrain run's loop spends its time: each part of fit() timed in place.

overhead.py says how a run compares with a hand-written loop; this script says what
the loop's time is made of. It runs `jaxtrain.run` on the default ae-digits config
(after one untimed warm-up run) and times, inside `jaxtrain.loop.fit`:

- `next`: the data iterator handing out the next batch (Grain, the batch plan, the
  device put),
- `step`: the call of the compiled train step, or of several steps per call
  (trainer.steps_per_call): the dispatch; on a CPU device part of the compute may run
  in this thread,
- each periodic action by its class name (evaluation, logging, checkpoints, events),
- `should_stop`: the preemption poll,
- `waiting on the window, rest`: the rest of fit()'s time, nearly all of it waiting for
  the oldest of the dispatched steps (`trainer.max_steps_in_flight`) to finish: the
  device's share.

Each figure is wall time per train step (µs), the median over `--repeats` runs, with the
slowest single call seen. It also gives the loop thread's CPU time and the process's
(every thread) per step. Nothing here changes what a run does: the parts are wrapped,
not replaced, and the wrappers' own cost (~1 µs a call) is in the figures.

    python benchmarks/loop_breakdown.py --steps 3000 --repeats 3 --out benchmarks/results/loop_breakdown.jsonl
    python benchmarks/loop_breakdown.py --override data.put_block=1
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, result_record, start_machine  # noqa: E402


class PartTimes:
  """Wall seconds, calls and the slowest call of each named part."""

  def __init__(self):
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self.calls: dict[str, int] = collections.defaultdict(int)
    self.slowest: dict[str, float] = collections.defaultdict(float)

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] += seconds
    self.calls[name] += 1
    self.slowest[name] = max(self.slowest[name], seconds)

  def timed(self, name: str, fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
      start = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        self.add(name, time.perf_counter() - start)
    return call


def timed_iterator(iterator: Any, parts: PartTimes) -> Any:
  """The same iterator object, its `__next__` timed. (Its class stays a subclass of the
  original: Orbax's Grain handler checkpoints it by type.)"""
  original = type(iterator)
  iterator.__class__ = type(f"Timed{original.__name__}", (original,),
                            {"__next__": parts.timed("next", original.__next__)})
  return iterator


class TimedAction:
  """A periodic action whose calls in the loop are timed (not the final round after the
  last step, which the loop's clock does not see); everything else is the action's own."""

  def __init__(self, action: Any, parts: PartTimes):
    self._action, self._call = action, parts.timed(type(action).__name__, action.__call__)

  def __call__(self, ctx: Any) -> None:
    (self._action if ctx.final else self._call)(ctx)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._action, name)


@contextlib.contextmanager
def instrumented_fit(parts: PartTimes, totals: dict[str, float]) -> Iterator[None]:
  """While open, `jaxtrain.api.fit` (the name a run calls) is a timing wrapper of the real fit."""
  import jaxtrain.api
  from jaxtrain import loop

  def fit(state: Any, train_step: Any, data_iterator: Any, actions: Sequence[Any], **kwargs: Any) -> Any:
    for name, part in (("should_stop", "should_stop"), ("multi_step", "step")):
      if kwargs.get(name) is not None:
        kwargs[name] = parts.timed(part, kwargs[name])
    thread_cpu = time.thread_time()
    result = loop.fit(state, parts.timed("step", train_step), timed_iterator(data_iterator, parts),
                      [TimedAction(a, parts) for a in actions], **kwargs)
    totals["loop_seconds"] += result.loop_seconds
    totals["loop_cpu_seconds"] += result.loop_cpu_seconds
    totals["loop_thread_cpu_seconds"] += time.thread_time() - thread_cpu
    totals["steps"] += result.steps_run
    return result

  jaxtrain.api.fit = fit
  try:
    yield
  finally:
    jaxtrain.api.fit = loop.fit


def one_run(steps: int, overrides: Sequence[str], root: Path) -> dict[str, Any]:
  """One timed run: µs per step of each part, the loop's total and its CPU times."""
  import jaxtrain

  parts, totals = PartTimes(), collections.defaultdict(float)
  cfg = jaxtrain.compose([f"trainer.steps={steps}", "trainer.epochs=null", f"run.dir={root}", "run.resume=never",
                          "logging.progress=none", *overrides])
  with instrumented_fit(parts, totals):
    result = jaxtrain.run(cfg)
  n = totals["steps"]
  us = {name: 1e6 * seconds / n for name, seconds in parts.seconds.items()}
  us["waiting on the window, rest"] = 1e6 * totals["loop_seconds"] / n - sum(us.values())
  return {
      "steps_per_sec": result.summary["train_steps_per_sec"],
      "loop_us_per_step": 1e6 * totals["loop_seconds"] / n,
      "us_per_step": us,
      "slowest_ms": {name: 1e3 * s for name, s in parts.slowest.items()},
      "loop_thread_cpu_us_per_step": 1e6 * totals["loop_thread_cpu_seconds"] / n,
      "process_cpu_us_per_step": 1e6 * totals["loop_cpu_seconds"] / n,
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=3000, help="train steps per run (default 3000)")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="extra jaxtrain config override (repeatable)")
  parser.add_argument("--threads", type=int, default=None, help="XLA compute threads (default: XLA's choice)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)
  machine = start_machine(args.threads)
  runs = []
  with tempfile.TemporaryDirectory(prefix="jaxtrain_breakdown_") as tmp:
    one_run(min(args.steps, 300), args.override, Path(tmp) / "warmup")
    for r in range(args.repeats):
      runs.append(one_run(args.steps, args.override, Path(tmp) / f"run_{r}"))
      print(f"  repeat {r + 1}/{args.repeats}  {runs[-1]['steps_per_sec']:8.1f} steps/s")

  def median(key: str, name: str | None = None) -> float:
    values = [run[key] if name is None else run[key].get(name, 0.0) for run in runs]
    return round(statistics.median(values), 1)

  names = sorted({name for run in runs for name in run["us_per_step"]}, key=lambda n: -median("us_per_step", n))
  print()
  print("| part of the loop             | µs per step | slowest call (ms) |")
  print("|------------------------------|------------:|------------------:|")
  for name in names:
    slowest = max(run["slowest_ms"].get(name, 0.0) for run in runs) if name != "waiting on the window, rest" else None
    print(f"| {name:28s} | {median('us_per_step', name):11.1f} | "
          + (f"{slowest:17.1f} |" if slowest is not None else f"{'':17s} |"))
  print(f"| {'the whole loop':28s} | {median('loop_us_per_step'):11.1f} | {'':17s} |")
  print(f"loop thread CPU {median('loop_thread_cpu_us_per_step')} µs per step, "
        f"process CPU {median('process_cpu_us_per_step')} µs per step; "
        f"{median('steps_per_sec')} steps/s")
  result = {
      **result_record("loop_breakdown", machine),
      "steps": args.steps,
      "repeats": args.repeats,
      "overrides": args.override,
      "threads": args.threads,
      "us_per_step_median": {name: median("us_per_step", name) for name in names},
      "loop_us_per_step_median": median("loop_us_per_step"),
      "loop_thread_cpu_us_per_step_median": median("loop_thread_cpu_us_per_step"),
      "process_cpu_us_per_step_median": median("process_cpu_us_per_step"),
      "steps_per_sec_median": median("steps_per_sec"),
      "runs": runs,
  }
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
