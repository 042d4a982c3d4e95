"""jaxtrain against the bare jax.jit loop, plain PyTorch and PyTorch Lightning on ae-digits (CPU).

All four train the default ae task's model on the same batches, in one process,
interleaved `--repeats` times:

- model: MLP autoencoder 64-256-256-16-256-256-64, GELU (tanh approximation, as
  flax's `nn.gelu`), MSE; AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay
  1e-4 on weight matrices only) with optax's warmup_cosine schedule (100 warmup steps,
  cosine to 0 at the last step); batch 256 of scikit-learn's digits in jaxtrain's
  `ShuffledBatchIndices` order. Initialisation differs (each framework's default).
- jaxtrain: `jaxtrain.run(jaxtrain.compose([...]))` with its default actions on
  (train metrics every 50 steps, evaluation every 250, async checkpoint every 500);
  steps/s is the summary's `train_steps_per_sec` (compilation excluded).
- bare: benchmarks/overhead.py's hand-written `jax.jit` loop of the same model, optax
  calls and batches, doing the same work as jaxtrain's default actions by hand (a loss
  read every 50 steps, evaluation every 250, an async Orbax checkpoint every 500), around
  the minimal step a user would write (the task's loss and AdamW).
- bare_same_step: the same hand-written loop and work around jaxtrain's own compiled
  train and eval steps (the default step: non-finite guard and gradient norm included).
  jaxtrain / bare_same_step is the loop's overhead, the limit jaxtrain is held to;
  jaxtrain / bare adds what the default step's guard and gradient norm cost.
- pytorch: a hand-written loop (`zero_grad`, forward, `backward`, `step`,
  scheduler step); each batch is a numpy gather + `torch.from_numpy`.
- lightning: a `LightningModule` run by `lightning.Trainer(max_steps=N)` on one CPU
  device, logging its loss every 50 steps, validating every 250 steps on the val
  split and saving a checkpoint every 500 steps (`ModelCheckpoint`), as jaxtrain
  does; batches come from a `DataLoader(batch_size=None)` over the same pre-gathered
  batches, so Lightning is not charged for per-sample collation.
  Torch loops are timed from the end of step `--warmup-steps` to the end of the run.
- threads: `--threads N` (default 1) is given to torch (`torch.set_num_threads`) and to
  XLA (`intra_op_parallelism_threads=N`, and `--xla_cpu_multi_thread_eigen=false` for 1)
  before either starts. On a shared, oversubscribed machine torch's OpenMP threads spin
  while they wait, so torch at 2 threads can run ~10x slower than at 1; one thread each
  is the fair, stable setting there.

    python benchmarks/peers.py --steps 2000 --repeats 5 --threads 1 --out benchmarks/results/peers.jsonl

A peer whose package is missing (`pip install -e .[bench]`) is skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import (BareLoop, append_result, machine_info, median_ci95, result_record, run_jaxtrain,  # noqa: E402
                      set_xla_threads)


class Workload:
  """The ae-digits batches and hyperparameters, read from jaxtrain's default config."""

  def __init__(self, steps: int):
    import jaxtrain
    from jaxtrain.data.sampling import ShuffledBatchIndices
    from jaxtrain.data.sources import load_splits

    cfg = jaxtrain.compose([])
    splits = load_splits(cfg.data)
    self.x_train, self.x_val = splits.train["x"], splits.val["x"]
    self.indices = ShuffledBatchIndices(splits.num_train, int(cfg.data.batch_size), int(cfg.data.shuffle_seed))
    self.steps = steps
    self.optim, self.schedule, self.model = cfg.optim, cfg.schedule, cfg.model
    self.eval_batch_size = int(cfg.data.eval_batch_size)

  def batch(self, i: int) -> Any:
    return self.x_train[self.indices[i]]

  def lr_factor(self, step: int) -> float:
    """optax.warmup_cosine_decay_schedule(0, 1, warmup, steps, end) at `step`."""
    warmup = int(self.schedule.warmup_steps)
    if step < warmup:
      return step / warmup
    decay = max(self.steps, warmup + 1) - warmup
    progress = min(step - warmup, decay) / decay
    end = float(self.schedule.end_lr_factor)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------- torch


def torch_model(work: Workload) -> Any:
  import torch.nn as tnn

  def mlp(widths: Sequence[int], out: int, inp: int) -> Any:
    layers: list[Any] = []
    for w in widths:
      layers += [tnn.Linear(inp, w), tnn.GELU(approximate="tanh")]
      inp = w
    return tnn.Sequential(*layers, tnn.Linear(inp, out))

  dim, latent = work.x_train.shape[1], int(work.model.latent_dim)
  return tnn.Sequential(mlp(work.model.encoder.widths, latent, dim), mlp(work.model.decoder.widths, dim, latent))


def torch_optimizer(work: Workload, model: Any) -> tuple[Any, Any]:
  import torch

  o = work.optim
  decay = [p for p in model.parameters() if p.ndim > 1]  # as jaxtrain: weight decay on kernels only
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(o.weight_decay)},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=float(o.lr), betas=(float(o.b1), float(o.b2)), eps=float(o.eps))
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, work.lr_factor)


def run_pytorch(work: Workload, warmup_steps: int) -> dict[str, Any]:
  import torch
  import torch.nn.functional as F

  torch.manual_seed(0)
  model = torch_model(work)
  opt, sched = torch_optimizer(work, model)
  start, loss = None, None
  for i in range(work.steps):
    if i == warmup_steps:
      start = time.perf_counter()
    x = torch.from_numpy(work.batch(i))
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), x)
    loss.backward()
    opt.step()
    sched.step()
  seconds = time.perf_counter() - start
  return {"steps_per_sec": round((work.steps - warmup_steps) / seconds, 3), "final_train_loss": loss.item()}


def run_lightning(work: Workload, warmup_steps: int, root: Path) -> dict[str, Any]:
  import lightning as L
  import torch
  import torch.nn.functional as F
  from torch.utils.data import DataLoader, IterableDataset

  class Batches(IterableDataset):
    def __init__(self, count: int, make: Callable[[int], Any]):
      self.count, self.make = count, make

    def __iter__(self):
      return (torch.from_numpy(self.make(i)) for i in range(self.count))

  class AutoencoderModule(L.LightningModule):
    def __init__(self):
      super().__init__()
      self.net = torch_model(work)

    def training_step(self, x, batch_idx):
      loss = F.mse_loss(self.net(x), x)
      self.log("train/loss", loss, on_step=True, on_epoch=False)
      return loss

    def validation_step(self, x, batch_idx):
      self.log("val/loss", F.mse_loss(self.net(x), x))

    def configure_optimizers(self):
      opt, sched = torch_optimizer(work, self.net)
      return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

  class Clock(L.Callback):
    start: float | None = None
    end: float | None = None

    def on_train_batch_end(self, trainer, *args):
      if trainer.global_step == warmup_steps:
        self.start = time.perf_counter()
      if trainer.global_step == work.steps:
        self.end = time.perf_counter()

  val = work.x_val
  val_batches = [val[i:i + work.eval_batch_size] for i in range(0, len(val), work.eval_batch_size)]
  torch.manual_seed(0)
  clock = Clock()
  trainer = L.Trainer(
      max_steps=work.steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
      enable_model_summary=False, log_every_n_steps=50, val_check_interval=250, check_val_every_n_epoch=None,
      num_sanity_val_steps=0, default_root_dir=str(root),
      callbacks=[clock, L.pytorch.callbacks.ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=500,
                                                            save_top_k=2, monitor="val/loss")])
  trainer.fit(AutoencoderModule(),
              train_dataloaders=DataLoader(Batches(work.steps, work.batch), batch_size=None),
              val_dataloaders=DataLoader(Batches(len(val_batches), lambda i: val_batches[i]), batch_size=None))
  seconds = clock.end - clock.start
  return {"steps_per_sec": round((work.steps - warmup_steps) / seconds, 3),
          "final_train_loss": float(trainer.callback_metrics["train/loss"])}


# ---------------------------------------------------------------------------- main


def available(module: str) -> bool:
  return importlib.util.find_spec(module) is not None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=2000, help="train steps per run (default 2000, the ae task's)")
  parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each (default 5)")
  parser.add_argument("--warmup-steps", type=int, default=50, help="untimed first steps of the torch loops")
  parser.add_argument("--warmup-runs", type=int, default=1, help="untimed runs of each before the repeats")
  parser.add_argument("--peers", default="pytorch,lightning", help="comma-separated subset of pytorch,lightning")
  parser.add_argument("--threads", type=int, default=1, help="compute threads for torch and XLA (default 1)")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)
  set_xla_threads(args.threads)

  import absl.logging
  absl.logging.set_verbosity(absl.logging.WARNING)
  import logging
  logging.getLogger("lightning").setLevel(logging.WARNING)
  logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

  machine = machine_info()
  names = ["jaxtrain", "bare_same_step", "bare"]
  for peer, module in (("pytorch", "torch"), ("lightning", "lightning")):
    if peer not in args.peers.split(","):
      continue
    if available("torch") and available(module):
      names.append(peer)
    else:
      print(f"skipping {peer}: `{module}` is not installed (pip install -e .[bench])")
  if "pytorch" in names or "lightning" in names:
    import torch
    torch.set_num_threads(args.threads)
    machine["torch"] = torch.__version__
    machine["torch_threads"] = torch.get_num_threads()
  if "lightning" in names:
    import lightning
    machine["lightning"] = lightning.__version__
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, python {machine['python']}, "
        f"jax {machine['jax']}" + (f", torch {machine['torch']} ({machine['torch_threads']} threads)"
                                    if "torch" in machine else "")
        + (f", lightning {machine['lightning']}" if "lightning" in machine else ""))
  print(f"load average at start: {machine['loadavg_at_start']}")
  print(f"workload: ae-digits, {args.steps} steps per run, {args.repeats} interleaved repeats, "
        f"{args.threads} compute thread(s) each")

  work = Workload(args.steps)
  bare = BareLoop(args.steps, [])
  bare_same_step = BareLoop(args.steps, [], step="jaxtrain")
  runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
  with tempfile.TemporaryDirectory(prefix="jaxtrain_peers_") as tmp:
    def one(name: str, index: int) -> dict[str, Any]:
      if name == "jaxtrain":
        return run_jaxtrain(args.steps, [], Path(tmp), index)
      if name == "bare":
        return bare.run(checkpoint_dir=Path(tmp) / f"bare_checkpoints_{index}")
      if name == "bare_same_step":
        return bare_same_step.run(checkpoint_dir=Path(tmp) / f"bare_same_step_checkpoints_{index}")
      if name == "pytorch":
        return run_pytorch(work, args.warmup_steps)
      return run_lightning(work, args.warmup_steps, Path(tmp) / f"lightning_{index}")

    for w in range(args.warmup_runs):  # untimed: imports, thread pools, first compile
      for name in names:
        one(name, -1 - w)
    for r in range(args.repeats):
      order = names if r % 2 == 0 else names[::-1]  # drifting machine load hits all alike
      for name in order:
        res = one(name, r)
        runs[name].append(res)
        print(f"  repeat {r + 1}/{args.repeats}  {name:14s}  {res['steps_per_sec']:9.1f} steps/s")

  medians = {name: statistics.median(r["steps_per_sec"] for r in runs[name]) for name in names}
  ratios = {peer: [j["steps_per_sec"] / p["steps_per_sec"] for j, p in zip(runs["jaxtrain"], runs[peer])]
            for peer in names[1:]}
  result = {
      **result_record("peers", machine),
      "workload": "ae-digits",
      "steps": args.steps,
      "repeats": args.repeats,
      "warmup_steps": args.warmup_steps,
      "threads": args.threads,
      "xla_flags": os.environ["XLA_FLAGS"],
      "steps_per_sec_median": {k: round(v, 1) for k, v in medians.items()},
      "ratio_median": {f"jaxtrain/{peer}": round(statistics.median(r), 3) for peer, r in ratios.items()},
      "ratio_median_ci95": {f"jaxtrain/{peer}": median_ci95(r) for peer, r in ratios.items()},
      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
      "runs": runs,
  }
  print()
  print("| framework      | median steps/s | min    | max    | median ratio jaxtrain/this | 95 % interval |")
  print("|----------------|---------------:|-------:|-------:|---------------------------:|--------------:|")
  for name in names:
    sps = [r["steps_per_sec"] for r in runs[name]]
    ratio = f"{statistics.median(ratios[name]):.3f}" if name in ratios else "1"
    interval = "–".join(f"{x:.3f}" for x in result["ratio_median_ci95"][f"jaxtrain/{name}"]) if name in ratios else ""
    print(f"| {name:14s} | {medians[name]:14.1f} | {min(sps):6.1f} | {max(sps):6.1f} | {ratio:>26s} "
          f"| {interval:>13s} |")
  print(f"load average at end: {result['loadavg_at_end']}")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
