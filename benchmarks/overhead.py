"""Overhead of the jaxtrain loop against a bare hand-written `jax.jit` loop (ae-digits, lm-tiny).

Every loop trains the same model and loss, built by the task from the config
(default: ae, an MLP autoencoder 64-256-256-16-256-256-64, GELU, MSE), with the
same optimizer (AdamW, lr 1e-3, warmup_cosine with 100 warmup steps, weight decay
1e-4 on kernels) on the same batches (batch 256 of scikit-learn's digits, in the
`ShuffledBatchIndices` order), in one process, interleaved `--repeats` times:

- jaxtrain: `jaxtrain.run(jaxtrain.compose([...]))` with the default periodic
  actions on (train-metric logging every 50 steps, eval every 250, async
  checkpoint every 500) and `train_steps_per_sec` read from the summary. That
  figure excludes compilation and covers the whole loop: Grain iterator and
  prefetch to device, the step, and every action.
- bare_same_work: `jax.jit(step, donate_argnums=...)` by hand, doing the same work
  as those actions: a loss read every 50 steps, evaluation every 250 on the val
  split, an async save through a plain Orbax CheckpointManager every 500. Each
  step gathers its batch from host memory with numpy and `jax.device_put`s it, as
  jaxtrain's pipeline does. Timed after a compile + warmup step, with
  `block_until_ready` at the end. Its step is the minimal one a user would write:
  the task's loss and AdamW, without jaxtrain's non-finite guard and grad_norm.
- bare_same_step: the same hand-written loop and work, calling jaxtrain's own
  compiled train and eval steps on jaxtrain's initial state.
- jaxtrain_no_grad_norm: jaxtrain with `trainer.grad_norm=false`, whose step
  does the minimal step's work plus a check of the loss.
- jaxtrain_minimal_step: jaxtrain with `trainer.grad_norm=false
  trainer.skip_nonfinite=false`, whose step does exactly the minimal step's work.
- jaxtrain_one_put and jaxtrain_one_step_per_call: jaxtrain with one transfer per
  batch (`data.put_block=1`) and with one step per compiled call
  (`trainer.steps_per_call=1`; the default run makes ten per call), as the
  hand-written loops do.
- jaxtrain_loop_only and bare: jaxtrain with evaluation, loss reads and
  checkpoints pushed past the last step, and the hand-written loop training
  alone: the loop alone against training alone.

jaxtrain / bare_same_step is the loop's overhead (the same compiled step and the
same work around it); jaxtrain / bare_same_work adds what the default step's
guard and metrics cost; jaxtrain_minimal_step / bare_same_work compares the
same step work written both ways (jaxtrain_no_grad_norm / bare_same_work the
same plus jaxtrain's non-finite guard); jaxtrain_loop_only / bare is the loop with no actions;
jaxtrain / bare what the actions cost, all told. `--threads 1` runs XLA on one
core and leaves the other to the host, as an accelerator would.

    python benchmarks/overhead.py --steps 1000 --repeats 5
    python benchmarks/overhead.py --override data.read_threads=1 --override data.prefetch=2

Prints the machine, one line per run, and a table of medians; `--out FILE`
appends the results as one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def append_result(path: Path, result: dict[str, Any]) -> None:
  """Appends `result` as one JSON line to `path` (the raw data behind BENCHMARKS.md)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a") as f:
    f.write(json.dumps(result) + "\n")


def set_xla_threads(threads: int) -> None:
  """XLA:CPU computes on `threads` threads (one: no Eigen pool). Must run before jax is imported."""
  if "jax" in sys.modules:
    print("warning: jax was imported before the thread count could be applied to XLA")
  eigen = "true" if threads > 1 else "false"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={eigen}"
                             f" intra_op_parallelism_threads={threads}").strip()


def machine_info() -> dict[str, Any]:
  import jax

  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {
      "cpu": cpu_model(),
      "cores": cores,
      "os": f"{platform.system()} {platform.release()}",
      "python": platform.python_version(),
      "jax": jax.__version__,
      "device": str(jax.devices()[0]),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
  }


def median_ci95(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
  """A 95 % bootstrap interval of the median of `values` (per-repeat ratios): how far the
  median of this many repeats can move on this machine, from its own spread."""
  import numpy as np

  rng = np.random.default_rng(seed)
  data = np.asarray(values, dtype=float)
  medians = np.median(rng.choice(data, size=(resamples, len(data)), replace=True), axis=1)
  low, high = np.percentile(medians, [2.5, 97.5])
  return round(float(low), 3), round(float(high), 3)


def start_machine(threads: int | None) -> dict[str, Any]:
  """What every CPU benchmark does first: XLA's thread count (before jax starts), absl's logs
  quiet, and the machine printed and returned (for the result's JSON line)."""
  if threads:
    set_xla_threads(threads)

  import absl.logging
  absl.logging.set_verbosity(absl.logging.WARNING)

  machine = machine_info()
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, python {machine['python']}, "
        f"jax {machine['jax']}, device {machine['device']} (x{machine['device_count']})")
  print(f"load average at start: {machine['loadavg_at_start']}")
  return machine


def result_record(benchmark: str, machine: dict[str, Any]) -> dict[str, Any]:
  """The start of a result's JSON line: what ran, when and where."""
  return {"benchmark": benchmark, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "machine": machine}


# ---------------------------------------------------------------------------- jaxtrain


def run_jaxtrain(steps: int, overrides: Sequence[str], root: Path, index: int) -> dict[str, Any]:
  """One full `jaxtrain.run`; returns its summary's timing figures."""
  import jaxtrain

  cfg = jaxtrain.compose([
      f"trainer.steps={steps}",
      "trainer.epochs=null",
      f"run.dir={root / f'jaxtrain_{index}'}",
      "run.resume=never",
      "logging.progress=none",
      *overrides,
  ])
  start = time.perf_counter()
  result = jaxtrain.run(cfg)
  wall = time.perf_counter() - start
  s = result.summary
  return {
      "steps_per_sec": s["train_steps_per_sec"],
      "cpu_ms_per_step": s["train_cpu_ms_per_step"],
      "wall_seconds": round(wall, 3),
      "compile_seconds": s["compile_seconds"],
      "eval_seconds": s["eval_seconds"],
      "checkpoint_blocking_seconds": s["checkpoint_blocking_seconds"],
      "compilations": s["train_step_compilations"],
      "final_val_loss": s["final_metrics"].get("val/loss"),
      # Tasks that count their cost per step (lm): tokens/s, and MFU where the device's peak is known.
      "tokens_per_sec": s.get("train_tokens_per_sec"),
      "mfu": s.get("train_mfu"),
  }


# ---------------------------------------------------------------------------- bare loop


class BareLoop:
  """The same training as jaxtrain's default ae-digits run, in a loop written by hand.

  `step="hand"`: the step is written here too, as a user would (the task's loss, AdamW,
  nothing else). `step="jaxtrain"`: the loop calls jaxtrain's own compiled train and eval
  steps (the task's step with the default non-finite guard and its metrics, grad_norm
  among them), so only the loop around them differs from jaxtrain's.

  For other scripts: `init_state(rng)`, `step_fn(state, batch) -> (state, loss)`,
  `batch(i)` (put with `batch_sharding`; None = the default device) and, with jaxtrain's
  step, its executable `compiled_step`.
  """

  def __init__(self, steps: int, overrides: Sequence[str], step: str = "hand"):
    import jax
    import optax

    import jaxtrain
    from jaxtrain.config.validate import validate
    from jaxtrain.data.sampling import ShuffledBatchIndices
    from jaxtrain.data.sources import load_splits
    from jaxtrain.tasks.registry import task_class

    cfg = jaxtrain.compose(list(overrides))  # for the data split, the model and the hyperparameters
    splits = load_splits(cfg.data)
    self.train = splits.train
    # The same work as jaxtrain's default actions, when asked for: evaluation every
    # trainer.eval_every steps on the val split (whole eval batches, kept on the device),
    # a loss read every trainer.log_every steps, an async Orbax checkpoint every checkpoint.every.
    self.eval_every, self.log_every = int(cfg.trainer.eval_every), int(cfg.trainer.log_every)
    self.checkpoint_every = int(cfg.checkpoint.every)
    eval_batch = int(cfg.data.eval_batch_size)
    num_val = len(next(iter(splits.val.values())))
    self.val_batches = [{k: v[i:i + eval_batch] for k, v in splits.val.items()}
                        for i in range(0, num_val - eval_batch + 1, eval_batch)] or [splits.val]
    self.batch_size = int(cfg.data.batch_size)
    self.indices = ShuffledBatchIndices(splits.num_train, self.batch_size, int(cfg.data.shuffle_seed))
    self.steps = steps
    self.seed = int(cfg.trainer.seed)
    # The task only supplies the model and its loss; the loop around them is written by hand.
    spec = validate(cfg)
    task = task_class(spec.task.name)(spec.task, {k: v[:1] for k, v in self.train.items()})
    o, sch = cfg.optim, cfg.schedule
    schedule = optax.warmup_cosine_decay_schedule(0.0, o.lr, sch.warmup_steps, max(steps, sch.warmup_steps + 1),
                                                  o.lr * sch.end_lr_factor)

    def adamw(learning_rate):
      return optax.adamw(learning_rate, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                         mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))

    self.tx = optax.inject_hyperparams(adamw)(learning_rate=schedule)
    if o.clip_norm:  # as jaxtrain: clip before the optimizer (the lm task clips at 1.0)
      self.tx = optax.chain(optax.clip_by_global_norm(o.clip_norm), self.tx)
    tx = self.tx
    rng = jax.random.PRNGKey(self.seed)

    def train_step(state, batch):
      params, model_state, opt_state = state
      grad_fn = jax.value_and_grad(task.loss, has_aux=True)
      (loss, (_, model_state)), grads = grad_fn(params, model_state, batch, rng, True)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), model_state, opt_state), loss

    def init(rng):
      params, model_state = task.init(rng)
      return params, model_state, tx.init(params)

    def eval_step(state, batch):
      params, model_state, _ = state
      return task.loss(params, model_state, batch, rng, False)[0]

    self.init_state = jax.jit(init)
    self.step_fn = jax.jit(train_step, donate_argnums=0)
    self._eval = jax.jit(eval_step)
    self.batch_sharding = None  # batches on the default device (device_put's default)
    self.compiled_step = None  # jaxtrain's executable, when the loop calls it
    if step == "jaxtrain":
      self._use_jaxtrain_steps(spec)
    elif step != "hand":
      raise ValueError(f"step={step!r}: choose hand or jaxtrain")

  def _use_jaxtrain_steps(self, spec: Any) -> None:
    """Swaps in the engine's compiled steps, initial state and batch layout."""
    import jax
    import jax.numpy as jnp

    from jaxtrain.build import build
    from jaxtrain.core import mesh as mesh_lib
    from jaxtrain.core.step import WEIGHT_KEY

    engine = build(spec)
    self.batch_sharding = mesh_lib.batch_sharding(engine.mesh)
    initial = engine.state
    self.init_state = lambda rng: jax.tree.map(jnp.copy, initial)  # every run starts from the engine's state
    train_step = self.compiled_step = engine.train_step.compile(initial, self.batch(0))

    def step_and_loss(state, batch):
      state, metrics = train_step(state, batch)
      return state, metrics["loss"]

    self.step_fn = step_and_loss

    def eval_loss(state, batch):
      sums = engine.eval_step(state, batch)  # compiled at its first call, before the clock
      return sums["loss"] / sums[WEIGHT_KEY]

    self._eval = eval_loss
    # jaxtrain's eval step takes the split in its padded batches, with their weight masks.
    self.val_batches = [engine.val_data[i] for i in range(len(engine.val_data))]

  def batch(self, i: int) -> Any:
    import jax

    idx = self.indices[i]
    return jax.device_put({k: v[idx] for k, v in self.train.items()}, self.batch_sharding)

  def run(self, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Trains `steps` steps; with `checkpoint_dir`, also evaluates, reads the loss and
    checkpoints there as jaxtrain's default actions do (the same work)."""
    import jax
    import orbax.checkpoint as ocp

    same_work = checkpoint_dir is not None
    state = self.init_state(jax.random.PRNGKey(self.seed))
    # Compile and warm up on a throwaway copy, so the timed run starts at step 0.
    warm_state = jax.tree.map(lambda x: x.copy(), state)
    start = time.perf_counter()
    warm = self.step_fn(warm_state, self.batch(0))
    jax.block_until_ready(warm)
    compile_seconds = time.perf_counter() - start
    del warm
    manager = None
    if same_work:
      val_batches = [jax.device_put(b, self.batch_sharding) for b in self.val_batches]
      jax.block_until_ready(self._eval(state, val_batches[0]))  # compiled before the clock, as jaxtrain does
      manager = ocp.CheckpointManager(checkpoint_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2))

    start, cpu_start = time.perf_counter(), time.process_time()
    loss = None
    for i in range(self.steps):
      state, loss = self.step_fn(state, self.batch(i))
      step = i + 1
      if same_work:
        if step % self.log_every == 0:
          float(loss)
        if step % self.eval_every == 0:
          float(sum(self._eval(state, b) for b in val_batches) / len(val_batches))
        if step % self.checkpoint_every == 0:
          manager.save(step, args=ocp.args.StandardSave(state))
    jax.block_until_ready((state, loss))
    seconds = time.perf_counter() - start
    cpu_ms_per_step = 1e3 * (time.process_time() - cpu_start) / self.steps
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
    return {"steps_per_sec": round(self.steps / seconds, 3), "cpu_ms_per_step": round(cpu_ms_per_step, 3),
            "first_call_seconds": round(compile_seconds, 3),
            "final_train_loss": float(loss)}


# ---------------------------------------------------------------------------- main

# Config overrides that select each workload; both loops are built from the same config.
WORKLOADS = {"ae-digits": [], "lm-tiny": ["task=lm"]}
LOOPS = {
    "jaxtrain": "jaxtrain, default actions",
    "jaxtrain_no_grad_norm": "jaxtrain, trainer.grad_norm=false",
    "jaxtrain_minimal_step": "jaxtrain, no grad_norm, no guard",
    "jaxtrain_one_put": "jaxtrain, data.put_block=1",
    "jaxtrain_one_step_per_call": "jaxtrain, trainer.steps_per_call=1",
    "bare_same_step": "bare loop, jaxtrain's step, same work",
    "bare_same_work": "bare jax.jit + the same evals/reads/saves",
    "jaxtrain_loop_only": "jaxtrain, no eval/log/checkpoint",
    "bare": "bare jax.jit, train only",
}
RATIOS = {
    # The loop's overhead: jaxtrain's own compiled steps, with the same work, in a loop written by hand.
    "jaxtrain/bare_same_step": ("jaxtrain", "bare_same_step"),
    # What sending batches in blocks gains (data.put_block 8 against one transfer per batch).
    "jaxtrain/jaxtrain_one_put": ("jaxtrain", "jaxtrain_one_put"),
    # The loop's overhead with one transfer per batch, as the hand-written loop does.
    "jaxtrain_one_put/bare_same_step": ("jaxtrain_one_put", "bare_same_step"),
    # What ten steps per call gain (trainer.steps_per_call 10 against one step per call).
    "jaxtrain/jaxtrain_one_step_per_call": ("jaxtrain", "jaxtrain_one_step_per_call"),
    # The loop's overhead with one dispatch per step, as the hand-written loop does.
    "jaxtrain_one_step_per_call/bare_same_step": ("jaxtrain_one_step_per_call", "bare_same_step"),
    # All told: the same work with a minimal hand-written step (no non-finite guard, no grad_norm).
    "jaxtrain/bare_same_work": ("jaxtrain", "bare_same_work"),
    # The same step work on both sides: jaxtrain's step without the gradient-norm pass and the
    # non-finite guard against the minimal hand-written step.
    "jaxtrain_minimal_step/bare_same_work": ("jaxtrain_minimal_step", "bare_same_work"),
    # The same, jaxtrain's step still guarding its update against a non-finite loss.
    "jaxtrain_no_grad_norm/bare_same_work": ("jaxtrain_no_grad_norm", "bare_same_work"),
    # The loop alone (Grain iterator, device put, step dispatch, action checks) against training alone.
    "jaxtrain_loop_only/bare": ("jaxtrain_loop_only", "bare"),
    # What evaluation, loss reads and checkpoints cost on top, all told.
    "jaxtrain/bare": ("jaxtrain", "bare"),
}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=1000, help="train steps per run (default 1000)")
  parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each loop (default 5)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed warm-up runs of each loop before the repeats (default 1)")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="extra jaxtrain config override, e.g. data.read_threads=1 (repeatable)")
  parser.add_argument("--workload", choices=sorted(WORKLOADS), default="ae-digits",
                      help="ae-digits (default task) or lm-tiny (task=lm at its default tiny size, data=text)")
  parser.add_argument("--threads", type=int, default=None,
                      help="XLA compute threads (default: XLA's own choice, every core)")
  parser.add_argument("--loops", nargs="+", choices=list(LOOPS), default=list(LOOPS),
                      help="run only these loops (default: all nine); ratios whose two loops ran are reported. "
                           "`--loops jaxtrain bare_same_step` gives the loop's overhead alone, so the same time "
                           "buys three times the repeats")
  args = parser.parse_args(argv)
  args.override = [*WORKLOADS[args.workload], *args.override]
  loops = [name for name in LOOPS if name in args.loops]
  ratio_pairs = {label: pair for label, pair in RATIOS.items() if set(pair) <= set(loops)}
  machine = start_machine(args.threads)
  print(f"workload: {args.workload}, {args.steps} steps per run, {args.repeats} interleaved repeats"
        + (f", overrides {args.override}" if args.override else ""))

  bare = BareLoop(args.steps, args.override) if {"bare", "bare_same_work"} & set(loops) else None
  bare_jaxtrain_step = BareLoop(args.steps, args.override, step="jaxtrain") if "bare_same_step" in loops else None
  # Evaluation, loss reads and checkpoints pushed past the last step: the loop alone.
  quiet = [f"trainer.eval_every={10 * args.steps}", f"checkpoint.every={10 * args.steps}",
           f"trainer.log_every={10 * args.steps}"]
  runs: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
  with tempfile.TemporaryDirectory(prefix="jaxtrain_overhead_") as tmp:

    def one(name: str, index: int) -> dict[str, Any]:
      if name == "jaxtrain":
        return run_jaxtrain(args.steps, args.override, Path(tmp), index)
      if name == "jaxtrain_no_grad_norm":
        return run_jaxtrain(args.steps, [*args.override, "trainer.grad_norm=false"], Path(tmp) / "no_grad_norm",
                            index)
      if name == "jaxtrain_minimal_step":
        return run_jaxtrain(args.steps, [*args.override, "trainer.grad_norm=false", "trainer.skip_nonfinite=false"],
                            Path(tmp) / "minimal_step", index)
      if name == "jaxtrain_one_put":
        return run_jaxtrain(args.steps, [*args.override, "data.put_block=1"], Path(tmp) / "one_put", index)
      if name == "jaxtrain_one_step_per_call":
        return run_jaxtrain(args.steps, [*args.override, "trainer.steps_per_call=1"], Path(tmp) / "one_step", index)
      if name == "jaxtrain_loop_only":
        return run_jaxtrain(args.steps, [*args.override, *quiet], Path(tmp) / "loop_only", index)
      if name == "bare_same_work":
        return bare.run(checkpoint_dir=Path(tmp) / f"bare_checkpoints_{index}")
      if name == "bare_same_step":
        return bare_jaxtrain_step.run(checkpoint_dir=Path(tmp) / f"bare_same_step_checkpoints_{index}")
      return bare.run()

    # Warm-up: first-run costs (imports, Orbax/Grain thread pools, caches) are not overhead per step.
    for w in range(args.warmup):
      for name in loops:
        one(name, -1 - w)
    for r in range(args.repeats):
      # Alternate the order, so drifting machine load hits every loop alike.
      for name in (loops if r % 2 == 0 else loops[::-1]):
        res = one(name, r)
        runs[name].append(res)
        print(f"  repeat {r + 1}/{args.repeats}  {name:18s}  {res['steps_per_sec']:9.1f} steps/s")

  sps = {name: [r["steps_per_sec"] for r in runs[name]] for name in loops}
  ratios = {label: [a / b for a, b in zip(sps[num], sps[den])]  # pairs from the same repeat
            for label, (num, den) in ratio_pairs.items()}
  # The work each loop asks of the machine: the process's CPU time per step (every thread).
  # Other load on a shared machine moves steps/s far more than it moves this.
  cpu = {name: [r["cpu_ms_per_step"] for r in runs[name]] for name in loops}
  cpu_ratios = {label: [b / a for a, b in zip(cpu[num], cpu[den])] for label, (num, den) in ratio_pairs.items()}
  result = {
      **result_record("overhead", machine),
      "workload": args.workload,
      "steps": args.steps,
      "repeats": args.repeats,
      "overrides": args.override,
      "threads": args.threads,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "steps_per_sec_median": {name: round(statistics.median(v), 1) for name, v in sps.items()},
      "ratio_median": {label: round(statistics.median(v), 3) for label, v in ratios.items()},
      "ratio_median_ci95": {label: median_ci95(v) for label, v in ratios.items()},
      "cpu_ms_per_step_median": {name: round(statistics.median(v), 3) for name, v in cpu.items()},
      # As the steps/s ratios: above 1, the first loop needs less CPU per step.
      "cpu_ratio_median": {label: round(statistics.median(v), 3) for label, v in cpu_ratios.items()},
      "loops": loops,
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
      "runs": runs,
  }
  if "jaxtrain/bare" in ratios:
    # The figure earlier versions of this script reported: jaxtrain (all actions) over the train-only loop.
    result.update(jaxtrain_steps_per_sec_median=round(statistics.median(sps["jaxtrain"]), 1),
                  bare_steps_per_sec_median=round(statistics.median(sps["bare"]), 1),
                  ratio_median_all_actions_over_train_only=round(statistics.median(ratios["jaxtrain/bare"]), 3))

  print()
  print("| loop                                      | median steps/s | min    | max    | CPU ms/step |")
  print("|-------------------------------------------|---------------:|-------:|-------:|------------:|")
  for name in loops:
    label = LOOPS[name]
    print(f"| {label:41s} | {statistics.median(sps[name]):14.1f} | {min(sps[name]):6.1f} | {max(sps[name]):6.1f} "
          f"| {statistics.median(cpu[name]):11.3f} |")
  for label, values in ratios.items():
    low, high = result["ratio_median_ci95"][label]
    print(f"median ratio {label:41s} {statistics.median(values):.3f}  95 % interval {low:.3f}–{high:.3f}  "
          f"(per repeat {', '.join(f'{x:.3f}' for x in values)})")
    print(f"  CPU per step, inverse ratio {'':26s} {statistics.median(cpu_ratios[label]):.3f}")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
