"""jaxtrain's lm task against the same transformer in PyTorch (optionally `torch.compile`d): tokens/s and MFU.

Both train the lm task's decoder-only transformer at one size (`--preset`: tiny, the
task's default; small, base or 1b, the `+experiment=lm_*` presets) on the same byte
windows of the same text, in jaxtrain's shuffled batch order, in one process,
interleaved `--repeats` times:

- jaxtrain: `jaxtrain.run(jaxtrain.compose([...]))` with the preset's config and its
  default actions; tokens/s and MFU are the summary's (`train_tokens_per_sec`,
  `train_mfu`), compilation excluded.
- pytorch: the same network written in PyTorch: token embedding (normal 0.02), pre-norm
  blocks (RMSNorm or LayerNorm, eps 1e-6), causal attention through
  `F.scaled_dot_product_attention` with RoPE (pairs (i, i + D/2), as
  `jaxtrain/models/transformer.py`) or learned positions, SwiGLU or GELU MLP, no
  biases, tied or untied output; AdamW with the config's betas, eps and weight decay
  on matrices only, gradient clipping at `optim.clip_norm`, the warmup-cosine schedule;
  `torch.autocast` to bfloat16 when the preset trains in bf16. `--compile` wraps the
  model in `torch.compile`. Timed from the end of step `--warmup-steps` (compilation
  included before it) to a device synchronisation after the last step.

MFU for both is model FLOPs per step (the lm task's formula, `LMTask.step_cost`:
6·N·tokens + 12·layers·d_model·seq_len·tokens) times steps/s over the device's peak
(`jaxtrain/core/hardware.py`; unknown for CPUs, so no MFU there). The PyTorch network's
parameter count is checked against the task's own count before anything is timed.

    # on one GPU, with a CUDA build of torch:
    python benchmarks/peers_lm.py --preset small --steps 300 --repeats 3 --compile \\
        --out benchmarks/results/peers_lm.jsonl
    # on CPU (eager torch, one thread each):
    python benchmarks/peers_lm.py --preset tiny --steps 200 --repeats 3 --threads 1
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
from overhead import append_result, machine_info, result_record, run_jaxtrain, set_xla_threads  # noqa: E402
from peers import Workload  # noqa: E402

PRESETS = {"tiny": ["task=lm"], "small": ["+experiment=lm_small"], "base": ["+experiment=lm_base"],
           "1b": ["+experiment=lm_1b"]}


class LMWorkload:
  """The preset's config, network shape, token windows and batch order, read through jaxtrain."""

  def __init__(self, overrides: Sequence[str], steps: int):
    import jaxtrain
    from jaxtrain.config.validate import validate
    from jaxtrain.data.sampling import ShuffledBatchIndices
    from jaxtrain.data.sources import load_splits
    from jaxtrain.tasks.registry import task_class

    self.overrides = [*overrides, f"trainer.steps={steps}", "trainer.epochs=null"]
    cfg = jaxtrain.compose(self.overrides)
    splits = load_splits(cfg.data)
    self.tokens = splits.train["tokens"]
    self.batch_size = int(cfg.data.batch_size)
    self.indices = ShuffledBatchIndices(splits.num_train, self.batch_size, int(cfg.data.shuffle_seed))
    spec = validate(cfg)
    self.task = task_class(spec.task.name)(spec.task, {"tokens": self.tokens[:1]})
    self.shape = self.task.shape
    self.steps = steps
    self.optim, self.schedule = cfg.optim, cfg.schedule
    self.precision = str(cfg.trainer.precision)
    self.cost = self.task.step_cost(self.batch_size)  # tokens and model FLOPs of one step

  def batch(self, i: int) -> Any:
    return self.tokens[self.indices[i]]

  lr_factor = Workload.lr_factor  # the same warmup-cosine factor as the ae peers (reads schedule, steps)


# ---------------------------------------------------------------------------- torch


def torch_rope(x: Any) -> Any:
  """RoPE of x [B, H, T, D] at positions 0..T-1, rotating pairs (i, i + D/2) as the lm task does."""
  import torch

  half = x.shape[-1] // 2
  freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
  angles = torch.arange(x.shape[2], dtype=torch.float32, device=x.device)[:, None] * freqs[None, :]
  sin, cos = angles.sin(), angles.cos()
  first, second = x[..., :half].float(), x[..., half:].float()
  return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1).to(x.dtype)


def torch_lm(shape: Any) -> Any:
  """The lm task's TransformerLM (jaxtrain/models/transformer.py) as a torch module."""
  import torch
  from torch import nn
  from torch.nn import functional as F

  def norm() -> nn.Module:
    return nn.RMSNorm(shape.d_model, eps=1e-6) if shape.norm == "rms" else nn.LayerNorm(shape.d_model, eps=1e-6)

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      d, f = shape.d_model, shape.d_ff
      self.attention_norm, self.mlp_norm = norm(), norm()
      self.qkv = nn.Linear(d, 3 * d, bias=False)
      self.out = nn.Linear(d, d, bias=False)
      self.up = nn.Linear(d, f, bias=False)
      self.gate = nn.Linear(d, f, bias=False) if shape.mlp == "swiglu" else None
      self.down = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
      b, t, d = x.shape
      q, k, v = self.qkv(self.attention_norm(x)).view(b, t, 3, shape.n_heads, shape.head_dim).permute(2, 0, 3, 1, 4)
      if shape.positions == "rope":
        q, k = torch_rope(q), torch_rope(k)
      attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
      x = x + self.out(attended.transpose(1, 2).reshape(b, t, d))
      h = self.mlp_norm(x)
      hidden = F.silu(self.gate(h)) * self.up(h) if self.gate is not None else F.gelu(self.up(h), approximate="tanh")
      return x + self.down(hidden)

  class LM(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
      nn.init.normal_(self.embed.weight, std=0.02)
      self.positions = (nn.Parameter(torch.randn(shape.seq_len, shape.d_model) * 0.02)
                        if shape.positions == "learned" else None)
      self.blocks = nn.ModuleList([Block() for _ in range(shape.n_layers)])
      self.final_norm = norm()
      self.output = None if shape.tie_embeddings else nn.Linear(shape.d_model, shape.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
      x = self.embed(tokens)
      if self.positions is not None:
        x = x + self.positions[:tokens.shape[1]]
      for block in self.blocks:
        x = block(x)
      x = self.final_norm(x)
      return x @ self.embed.weight.T if self.output is None else self.output(x)

  return LM()


def run_torch(work: LMWorkload, device: str, warmup_steps: int, compile_model: bool) -> dict[str, Any]:
  """Trains `work.steps` steps; returns tokens/s (and MFU where the device's peak is known)."""
  import torch
  from torch.nn import functional as F

  from jaxtrain.core.hardware import peak_flops_per_device

  torch.manual_seed(0)
  model = torch_lm(work.shape).to(device)
  o = work.optim
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(o.weight_decay)},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=float(o.lr), betas=(float(o.b1), float(o.b2)), eps=float(o.eps))
  sched = torch.optim.lr_scheduler.LambdaLR(opt, work.lr_factor)
  forward = torch.compile(model) if compile_model else model
  autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                            enabled=work.precision == "bf16")

  def sync() -> None:
    if device.startswith("cuda"):
      torch.cuda.synchronize()

  start, loss = None, None
  for i in range(work.steps):
    if i == warmup_steps:
      sync()
      start = time.perf_counter()
    tokens = torch.from_numpy(work.batch(i)).to(device, non_blocking=True).long()
    with autocast:
      logits = forward(tokens[:, :-1])
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if o.clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), float(o.clip_norm))
    opt.step()
    sched.step()
  sync()
  seconds = time.perf_counter() - start
  steps_per_sec = (work.steps - warmup_steps) / seconds
  kind = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
  peak = peak_flops_per_device(kind, work.precision)
  return {"steps_per_sec": round(steps_per_sec, 3), "tokens_per_sec": round(steps_per_sec * work.cost["tokens"], 1),
          "mfu": round(steps_per_sec * work.cost["flops"] / peak, 4) if peak else None,
          "final_train_loss": loss.item()}


def torch_param_count(shape: Any) -> int:
  return sum(p.numel() for p in torch_lm(shape).parameters())


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="lm size (default tiny)")
  parser.add_argument("--steps", type=int, default=200, help="train steps per run (default 200)")
  parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each (default 3)")
  parser.add_argument("--warmup-steps", type=int, default=10, help="untimed first steps of the torch runs")
  parser.add_argument("--warmup-runs", type=int, default=1, help="untimed runs of each before the repeats")
  parser.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model")
  parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
  parser.add_argument("--threads", type=int, default=None, help="CPU compute threads for torch and XLA")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="extra jaxtrain config override for both (repeatable), e.g. trainer.precision=fp32")
  parser.add_argument("--out", type=Path, default=None, help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)
  if args.threads:
    set_xla_threads(args.threads)

  import absl.logging
  absl.logging.set_verbosity(absl.logging.WARNING)
  import torch

  if args.threads:
    torch.set_num_threads(args.threads)
  device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  machine = machine_info()
  machine.update(torch=torch.__version__, torch_device=device,
                 torch_device_name=torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu")
  overrides = [*PRESETS[args.preset], *args.override]
  work = LMWorkload(overrides, args.steps)
  params = {"jaxtrain": work.task.num_params()["total"], "pytorch": torch_param_count(work.shape)}
  if params["jaxtrain"] != params["pytorch"]:
    raise SystemExit(f"the PyTorch network has {params['pytorch']} params, the lm task {params['jaxtrain']}: "
                     f"not the same model")
  peer = "pytorch_compiled" if args.compile else "pytorch"
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, jax {machine['jax']} on {machine['device_kind']}, "
        f"torch {machine['torch']} on {machine['torch_device_name']}")
  print(f"workload: lm {args.preset} ({params['jaxtrain']:,} params, {work.cost['tokens']:,} tokens per step, "
        f"{work.precision}), {args.steps} steps per run, {args.repeats} interleaved repeats")

  names = ["jaxtrain", peer]
  runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
  with tempfile.TemporaryDirectory(prefix="jaxtrain_peers_lm_") as tmp:
    def one(name: str, index: int) -> dict[str, Any]:
      if name == "jaxtrain":
        return run_jaxtrain(args.steps, overrides, Path(tmp), index)
      return run_torch(work, device, args.warmup_steps, args.compile)

    for w in range(args.warmup_runs):  # untimed: imports, thread pools, compilation caches
      for name in names:
        one(name, -1 - w)
    for r in range(args.repeats):
      for name in (names if r % 2 == 0 else names[::-1]):
        res = one(name, r)
        runs[name].append(res)
        print(f"  repeat {r + 1}/{args.repeats}  {name:16s}  {res['tokens_per_sec']:12,.0f} tokens/s")

  def median(name: str, key: str) -> float | None:
    values = [r[key] for r in runs[name] if r.get(key) is not None]
    return statistics.median(values) if values else None

  ratio = statistics.median(j["tokens_per_sec"] / p["tokens_per_sec"] for j, p in zip(runs["jaxtrain"], runs[peer]))
  result = {
      **result_record("peers_lm", machine),
      "preset": args.preset,
      "steps": args.steps,
      "repeats": args.repeats,
      "precision": work.precision,
      "params": params["jaxtrain"],
      "tokens_per_step": work.cost["tokens"],
      "flops_per_step": work.cost["flops"],
      "overrides": overrides,
      "tokens_per_sec_median": {name: median(name, "tokens_per_sec") for name in names},
      "mfu_median": {name: median(name, "mfu") for name in names},
      "ratio_median": {f"jaxtrain/{peer}": round(ratio, 3)},
      "runs": runs,
  }
  print()
  print("| framework        | median tokens/s | MFU    | median ratio jaxtrain/this |")
  print("|------------------|----------------:|-------:|---------------------------:|")
  for name in names:
    mfu = median(name, "mfu")
    print(f"| {name:16s} | {median(name, 'tokens_per_sec'):15,.0f} | {f'{mfu:.1%}' if mfu else 'n/a':>6s} "
          f"| {'1' if name == 'jaxtrain' else f'{ratio:.3f}':>26s} |")
  if args.out:
    append_result(args.out, result)
  return result


if __name__ == "__main__":
  main()
