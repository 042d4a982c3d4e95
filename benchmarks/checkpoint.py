"""How long a checkpoint save pauses the training loop: synchronous, Orbax async, snapshot.

For each size, a TrainState-like pytree of random float32 arrays (params, and AdamW's mu and
nu of the same shapes, plus a step counter; 1/3 of the bytes each), replicated over a
data-parallel mesh of all devices, is saved `--saves` times through jaxtrain's own
`Checkpointer` (jaxtrain/checkpoint.py: state + a Grain iterator + JSON meta in one
Orbax checkpoint) in three modes:

- sync: `checkpoint.async_save=false`, the whole write in the loop;
- orbax_async: `checkpoint.snapshot=none`, Orbax's async save, which returns after
  copying the arrays to host memory;
- snapshot: `checkpoint.snapshot=device` (what `auto` picks on CPU), a copy on the
  devices and the Orbax save on a checkpoint thread (jaxtrain/snapshot.py).

Each save is followed by one donated update of the whole state, as the loop's next
step would be. The loop's pause is save + that update, less the update alone: it
includes work a save leaves queued on the devices (the snapshot's copy), which the
time for `save` to return would hide. Both are reported, and the time until the write
is on disk (waited for, before the next save). Checkpoints live in a temporary folder
that is removed at the end, with keep=1.

    python benchmarks/checkpoint.py --sizes-mb 10,100,1000 --saves 5 --out benchmarks/results/checkpoint.jsonl
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info, result_record  # noqa: E402


def make_state(megabytes: float) -> Any:
  """~`megabytes` MB of float32 arrays shaped like a TrainState (params, mu, nu), replicated on the mesh."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec

  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  replicated = NamedSharding(mesh, PartitionSpec())
  # Four kernel-like layers and their biases per tree; the kernels hold nearly all bytes.
  per_tree = int(megabytes * 1e6 / 4 / 3)
  width = 1024
  rows = max(1, per_tree // (4 * width))
  shapes = {f"layer_{i}": {"kernel": (rows, width), "bias": (width,)} for i in range(4)}

  def tree(seed: int) -> Any:
    # Random values, as trained params and moments are: a constant array compresses to almost
    # nothing in Orbax's storage (100 MB of one value wrote 124 KB), which made saves look cheap.
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    make = jax.jit(lambda: treedef.unflatten([jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, leaves)]),
                   out_shardings=replicated)
    return make()

  state = {"step": jnp.zeros((), jnp.int32), "params": tree(1), "opt_state": {"mu": tree(2), "nu": tree(3)}}
  jax.block_until_ready(state)
  return state


def nbytes(state: Any) -> int:
  import jax

  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))


MODES = ("sync", "orbax_async", "snapshot")


def _donated_update():
  """A stand-in for the train step: touches every byte of the state and donates it."""
  import jax

  return jax.jit(lambda state: jax.tree.map(lambda x: x + 1, state), donate_argnums=0)


def time_saves(state: Any, directory: Path, mode: str, saves: int) -> tuple[Any, dict[str, Any]]:
  """Blocking and finishing seconds of `saves` saves through jaxtrain's Checkpointer.

  `mode` is sync, orbax_async (checkpoint.snapshot=none) or snapshot (=device).
  Each save is followed by one donated update of the state, as the loop's next
  step would be; the loop's pause is that save plus update, less the update
  alone (median of updates timed between the saves). Returns the updated state
  (the old one is donated) and the figures.
  """
  import grain
  import jax

  from jaxtrain.checkpoint import Checkpointer
  from jaxtrain.config.schema import CheckpointConfig

  update = _donated_update()
  cfg = CheckpointConfig(keep=1, monitor=None, async_save=mode != "sync",
                         snapshot="device" if mode == "snapshot" else "none")
  checkpointer = Checkpointer(directory, cfg)
  data_iterator = iter(grain.MapDataset.range(1000).to_iter_dataset())
  blocking, pauses, finishing, alone = [], [], [], []
  try:
    for step in range(1, saves + 1):
      for _ in range(3):  # the update alone, between saves
        start = time.perf_counter()
        state = jax.block_until_ready(update(state))
        alone.append(time.perf_counter() - start)
      start = time.perf_counter()
      checkpointer.save(step, state, data_iterator, {"step": step})
      returned = time.perf_counter()
      state = jax.block_until_ready(update(state))
      updated = time.perf_counter()
      checkpointer.wait()  # the background write, so saves do not overlap
      finishing.append(time.perf_counter() - start)
      blocking.append(returned - start)
      pauses.append(updated - start)
  finally:
    checkpointer.close()
  update_s = statistics.median(alone)
  pause = [max(0.0, p - update_s) for p in pauses]
  return state, {"blocking_s": [round(x, 4) for x in blocking], "pause_s": [round(x, 4) for x in pause],
                 "finish_s": [round(x, 4) for x in finishing], "update_alone_median_s": round(update_s, 4),
                 "blocking_median_s": round(statistics.median(blocking), 4),
                 "pause_median_s": round(statistics.median(pause), 4),
                 "finish_median_s": round(statistics.median(finishing), 4)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes-mb", default="10,100,1000", help="state sizes in MB (default 10,100,1000)")
  parser.add_argument("--saves", type=int, default=5, help="timed saves per size and mode (default 5)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)

  import absl.logging
  absl.logging.set_verbosity(absl.logging.WARNING)
  import jax

  machine = machine_info()
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, python {machine['python']}, "
        f"jax {machine['jax']}, {jax.device_count()} device(s)")
  print(f"load average at start: {machine['loadavg_at_start']}")

  rows = []
  with tempfile.TemporaryDirectory(prefix="jaxtrain_ckpt_bench_") as tmp:
    for size in (float(s) for s in args.sizes_mb.split(",")):
      state = make_state(size)
      real_mb = nbytes(state) / 1e6
      row: dict[str, Any] = {"size_mb": round(real_mb, 1)}
      # An untimed save per mode first: Orbax's thread pools, imports and the snapshot
      # copy's compilation are one-off costs.
      for mode in MODES:
        state, _ = time_saves(state, Path(tmp) / f"warmup_{mode}_{size}", mode, 1)
      for mode in MODES:
        state, row[mode] = time_saves(state, Path(tmp) / f"{mode}_{size}", mode, args.saves)
        print(f"  {real_mb:8.1f} MB  {mode:11s}  save returns {row[mode]['blocking_median_s'] * 1e3:7.1f} ms  "
              f"loop pause {row[mode]['pause_median_s'] * 1e3:7.1f} ms  "
              f"(written after {row[mode]['finish_median_s'] * 1e3:7.1f} ms)")
      for mode in MODES[1:]:
        row[f"{mode}_over_sync"] = round(row[mode]["pause_median_s"] / max(row["sync"]["pause_median_s"], 1e-6), 4)
      rows.append(row)
      del state

  result = {
      **result_record("checkpoint", machine),
      "saves": args.saves,
      "rows": rows,
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
  }
  print()
  print("| state (MB) | sync pause (ms) | Orbax async pause (ms) | snapshot pause (ms) | "
        "Orbax async / sync | snapshot / sync | snapshot written after (ms) |")
  print("|---:|---:|---:|---:|---:|---:|---:|")
  for row in rows:
    print(f"| {row['size_mb']:.1f} | {row['sync']['pause_median_s'] * 1e3:.1f} | "
          f"{row['orbax_async']['pause_median_s'] * 1e3:.1f} | {row['snapshot']['pause_median_s'] * 1e3:.1f} | "
          f"{row['orbax_async_over_sync']:.3f} | {row['snapshot_over_sync']:.3f} | "
          f"{row['snapshot']['finish_median_s'] * 1e3:.1f} |")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
