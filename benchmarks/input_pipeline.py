"""Input pipeline throughput (examples/s) with 0 and N Grain worker processes, and the
input-wait fraction of the default run.

Pipeline throughput: the run's own training pipeline (`jaxtrain.data.pipeline.train_pipeline`
-> `device_iterator` with data.worker_count workers -> `jax.device_put`) is read for
`--batches` batches after `--warmup` untimed ones, with no training step in between,
so the figure is how fast the input side alone can feed a step. Two datasets:

- `digits`: the default task's data (scikit-learn digits in memory, batch 256, read inline);
- `npz`: a synthetic NPZ of `--npz-mb` MB on disk (float32 rows of 1,024 values and an int
  label), read memory-mapped through data=dataset_dir, batch 256.

Input wait: `input_wait_fraction` from summary.json (share of the loop's wall time spent
waiting for the next batch) of the default run (`python -m jaxtrain.main`, ae-digits,
2,000 steps), `--default-runs` times. Each figure is the median over `--repeats` runs.

    python benchmarks/input_pipeline.py --workers 0,2 --repeats 3 --default-runs 3 \
        --out benchmarks/results/input_pipeline.jsonl
    # the default run with reader threads and device prefetch instead of inline reads:
    python benchmarks/input_pipeline.py --datasets '' --default-runs 3 --override data.read_threads=2 \
        --override data.prefetch=4 --override data.device_prefetch=2 --out benchmarks/results/input_pipeline.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import append_result, machine_info, result_record  # noqa: E402


def write_synthetic_npz(directory: Path, megabytes: float) -> Path:
  """A dataset directory holding one ~`megabytes` MB NPZ (x [N, 1024] float32, label [N]) and its YAML."""
  import numpy as np

  rows = max(512, int(megabytes * 2**20 / (1024 * 4)))
  rng = np.random.default_rng(0)
  x = np.lib.format.open_memmap(directory / "x.npy", mode="w+", dtype=np.float32, shape=(rows, 1024))
  for start in range(0, rows, 8192):  # chunks: the whole array never sits in memory
    x[start:start + 8192] = rng.random((min(8192, rows - start), 1024), np.float32)
  x.flush()
  np.savez(directory / "synthetic.npz", x=np.load(directory / "x.npy", mmap_mode="r"),
           label=rng.integers(0, 10, rows).astype(np.int32))
  (directory / "x.npy").unlink()
  (directory / "synthetic.yaml").write_text("path: synthetic.npz\nval_fraction: 0.01\n")
  return directory


def data_config(dataset: str, workers: int, dataset_dir: Path | None):
  """The composed run's data config for `dataset` with data.worker_count=workers."""
  import jaxtrain

  overrides = [f"data.worker_count={workers}"]
  if dataset == "npz":
    overrides += ["data=dataset_dir", f"data.dataset_configs_path={dataset_dir}", "data.check_finite=false"]
  return jaxtrain.compose(overrides).data


def pipeline_examples_per_sec(dataset: str, workers: int, batches: int, warmup: int,
                              dataset_dir: Path | None) -> float:
  """Examples/s of `batches` train batches through the run's pipeline, put on the device."""
  import jax

  from jaxtrain.data import pipeline
  from jaxtrain.data.sources import load_datasets

  cfg = data_config(dataset, workers, dataset_dir)
  sets = [pipeline.TrainSet(d.name, d.train, d.options) for d in load_datasets(cfg)]
  stream = pipeline.train_pipeline(sets, cfg)
  iterator = pipeline.device_iterator(stream.dataset, jax.device_put, cfg)
  for _ in range(warmup):  # worker start-up and first reads stay off the clock
    jax.block_until_ready(next(iterator))
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  jax.block_until_ready(batch)
  elapsed = time.perf_counter() - start
  del iterator  # stops the worker processes
  return batches * cfg.batch_size / elapsed


def default_run_input_wait(root: Path, index: int, overrides: Sequence[str]) -> dict[str, float]:
  """input_wait_fraction and train steps/s of the default run (plus `overrides`)."""
  import jaxtrain

  result = jaxtrain.run(jaxtrain.compose([f"run.dir={root / f'default_{index}'}", "logging.progress=none",
                                          *overrides]))
  return {"input_wait_fraction": result.summary["input_wait_fraction"],
          "train_steps_per_sec": result.summary["train_steps_per_sec"]}


def table(rows: list[dict[str, Any]], waits: list[dict[str, float]], overrides: Sequence[str]) -> str:
  """The markdown tables of BENCHMARKS.md."""
  lines = ["| dataset | worker processes | median examples/s | runs (examples/s) |", "|---|---:|---:|---|"]
  for row in rows:
    runs = ", ".join(f"{v:,.0f}" for v in row["examples_per_sec"])
    lines.append(f"| {row['dataset']} | {row['workers']} | {row['median']:,.0f} | {runs} |")
  if waits:
    fractions = [w["input_wait_fraction"] for w in waits]
    command = " ".join(["python -m jaxtrain.main", *overrides])
    lines += ["", "| default run (ae-digits, 2,000 steps) | runs | median input_wait_fraction | per run |",
              "|---|---:|---:|---|",
              f"| `{command}` | {len(waits)} | {statistics.median(fractions):.2%} | "
              f"{', '.join(f'{f:.2%}' for f in fractions)} |"]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", default="0,2", help="comma-separated data.worker_count values")
  parser.add_argument("--datasets", default="digits,npz", help="digits, npz, both or '' (none)")
  parser.add_argument("--npz-mb", type=float, default=512.0)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--default-runs", type=int, default=3, help="default runs for the input-wait figure")
  parser.add_argument("--override", action="append", default=[],
                      help="an override for the default runs, e.g. data.device_prefetch=2 (repeatable)")
  parser.add_argument("--out", type=Path, default=None, help="append one JSON line here")
  args = parser.parse_args(argv)

  import absl.flags

  absl.flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags
  info = machine_info()
  workers = [int(w) for w in args.workers.split(",")]
  rows, waits = [], []
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    datasets = [name for name in args.datasets.split(",") if name]
    dataset_dir = write_synthetic_npz(root, args.npz_mb) if "npz" in datasets else None
    for dataset in datasets:
      for count in workers:
        runs = [pipeline_examples_per_sec(dataset, count, args.batches, args.warmup, dataset_dir)
                for _ in range(args.repeats)]
        rows.append({"dataset": dataset, "workers": count, "examples_per_sec": runs,
                     "median": statistics.median(runs)})
        print(f"{dataset} workers={count}: {statistics.median(runs):,.0f} examples/s", flush=True)
    waits = [default_run_input_wait(root, i, args.override) for i in range(args.default_runs)]
  result = {**result_record("input_pipeline", info), "args": {k: str(v) for k, v in vars(args).items()},
            "rows": rows, "default_runs": waits}
  print(table(rows, waits, args.override))
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":  # Grain's worker processes re-import this module: nothing may run on import
  main()
