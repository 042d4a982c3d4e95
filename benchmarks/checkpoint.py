"""How long a checkpoint save blocks the training loop: async vs synchronous, by state size.

For each size, a TrainState-like pytree of float32 arrays (params, and AdamW's mu and
nu of the same shapes, plus a step counter; 1/3 of the bytes each), replicated over a
data-parallel mesh of all devices, is saved `--saves` times through jaxtrain's own
`Checkpointer` (jaxtrain/checkpoint.py: state + a Grain iterator + JSON meta in one
Orbax checkpoint), once with `checkpoint.async_save=true` and once with false. The
figure is the time `Checkpointer.save` takes to return, which is what the training
loop waits for; an async save then finishes in the background (waited for, untimed,
before the next save, and reported as `finish_s`). Checkpoints live in a temporary
folder that is removed at the end, with keep=1.

    python benchmarks/checkpoint.py --sizes-mb 10,100,1000 --saves 5 --out benchmarks/results/checkpoint.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info  # noqa: E402


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
    make = jax.jit(lambda: jax.tree.map(lambda s: jnp.full(s, seed, jnp.float32), shapes,
                                        is_leaf=lambda s: isinstance(s, tuple)),
                   out_shardings=replicated)
    return make()

  state = {"step": jnp.zeros((), jnp.int32), "params": tree(1), "opt_state": {"mu": tree(2), "nu": tree(3)}}
  jax.block_until_ready(state)
  return state


def nbytes(state: Any) -> int:
  import jax

  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))


def time_saves(state: Any, directory: Path, async_save: bool, saves: int) -> dict[str, Any]:
  """Blocking and finishing seconds of `saves` saves through jaxtrain's Checkpointer."""
  import grain

  from jaxtrain.checkpoint import Checkpointer
  from jaxtrain.config.schema import CheckpointConfig

  checkpointer = Checkpointer(directory, CheckpointConfig(keep=1, monitor=None, async_save=async_save))
  data_iterator = iter(grain.MapDataset.range(1000).to_iter_dataset())
  blocking, finishing = [], []
  try:
    for step in range(1, saves + 1):
      start = time.perf_counter()
      checkpointer.save(step, state, data_iterator, {"step": step})
      blocking.append(time.perf_counter() - start)
      checkpointer.wait()  # the background write, so saves do not overlap
      finishing.append(time.perf_counter() - start)
  finally:
    checkpointer.close()
  return {"blocking_s": [round(x, 4) for x in blocking], "finish_s": [round(x, 4) for x in finishing],
          "blocking_median_s": round(statistics.median(blocking), 4),
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
      # An untimed save first: Orbax's thread pools and imports are a one-off cost.
      time_saves(state, Path(tmp) / f"warmup_{size}", True, 1)
      for mode, async_save in (("sync", False), ("async", True)):
        row[mode] = time_saves(state, Path(tmp) / f"{mode}_{size}", async_save, args.saves)
        print(f"  {real_mb:8.1f} MB  {mode:5s}  blocks median {row[mode]['blocking_median_s'] * 1e3:8.1f} ms  "
              f"(finished after {row[mode]['finish_median_s'] * 1e3:8.1f} ms)")
      row["async_over_sync"] = round(row["async"]["blocking_median_s"] / row["sync"]["blocking_median_s"], 4)
      rows.append(row)
      del state

  result = {
      "benchmark": "checkpoint",
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "machine": machine,
      "saves": args.saves,
      "rows": rows,
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
  }
  print()
  print("| state (MB) | sync blocks (ms) | async blocks (ms) | async/sync | async write done after (ms) |")
  print("|-----------:|-----------------:|------------------:|-----------:|----------------------------:|")
  for row in rows:
    print(f"| {row['size_mb']:10.1f} | {row['sync']['blocking_median_s'] * 1e3:16.1f} | "
          f"{row['async']['blocking_median_s'] * 1e3:17.1f} | {row['async_over_sync']:10.3f} | "
          f"{row['async']['finish_median_s'] * 1e3:27.1f} |")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
