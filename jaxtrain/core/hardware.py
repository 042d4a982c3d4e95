"""Peak dense FLOP/s per accelerator, and throughput figures from a task's step cost.

MFU (model FLOPs utilisation) = the model FLOPs of the steps run per second /
(peak dense FLOP/s per device x devices). Model FLOPs are those of the math the
model needs (a task's `step_cost`, e.g. 6·N·tokens for a transformer), not what
the hardware executes: rematerialised forward passes do not count, so remat
lowers MFU by its extra compute.

Peaks are dense (no 2:4 sparsity) tensor-core/MXU figures per device (one GPU,
one TPU chip). "fp32" is the peak of float32 matmuls at JAX's default matmul
precision: TF32 tensor cores on NVIDIA Ampere and later, one bfloat16 pass on TPUs
(so the TPU fp32 figure equals its bf16 one).
"""

from __future__ import annotations

import dataclasses
import re

T = 1e12


@dataclasses.dataclass(frozen=True)
class Peak:
  """Peak dense FLOP/s of one device."""

  bf16: float
  fp32: float


# (regex over the lower-cased jax `device_kind`, peak); the first match wins.
# Variants not listed (H100 NVL, H200 NVL, ...) are unknown rather than guessed.
PEAKS: list[tuple[str, Peak]] = [
    # NVIDIA H100 Tensor Core GPU datasheet: PCIe BF16 1,513 / TF32 756 TFLOPS with sparsity.
    (r"h100 pcie", Peak(bf16=756.5 * T, fp32=378 * T)),
    # Same datasheet, SXM5 ("NVIDIA H100 80GB HBM3"): BF16 1,979 / TF32 989 TFLOPS with sparsity.
    (r"h100 (80gb hbm3|sxm)", Peak(bf16=989.4 * T, fp32=494.7 * T)),
    # NVIDIA H200 datasheet, SXM: BF16 1,979 / TF32 989 TFLOPS with sparsity (the H100 SXM's compute).
    (r"h200(?!.*nvl)", Peak(bf16=989.4 * T, fp32=494.7 * T)),
    # NVIDIA A100 datasheet (SXM4 and PCIe alike): BF16 312 / TF32 156 TFLOPS dense.
    (r"a100", Peak(bf16=312 * T, fp32=156 * T)),
    # Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e): bf16 per chip.
    (r"tpu v4", Peak(bf16=275 * T, fp32=275 * T)),
    (r"tpu v5 ?(lite|e)", Peak(bf16=197 * T, fp32=197 * T)),
    (r"tpu v5p?$", Peak(bf16=459 * T, fp32=459 * T)),
    (r"tpu v6 ?(lite|e)", Peak(bf16=918 * T, fp32=918 * T)),
]


def peak_flops_per_device(device_kind: str, precision: str = "fp32") -> float | None:
  """Peak dense FLOP/s of one device of this kind (jax `Device.device_kind`) at
  `precision` (bf16 | fp32); None for a kind not in the table (CPUs included)."""
  kind = device_kind.strip().lower()
  for pattern, peak in PEAKS:
    if re.search(pattern, kind):
      return peak.bf16 if precision == "bf16" else peak.fp32
  return None


def total_peak_flops(device_kind: str, num_devices: int, precision: str = "fp32",
                     peak_tflops: float | None = None) -> float | None:
  """Peak dense FLOP/s of `num_devices` devices: `peak_tflops` per device when
  given (trainer.peak_tflops), else the table's figure; None when unknown."""
  per_device = peak_tflops * T if peak_tflops else peak_flops_per_device(device_kind, precision)
  return per_device * num_devices if per_device else None


@dataclasses.dataclass(frozen=True)
class StepThroughput:
  """A task's cost per train step and the devices' peak: turns steps/s into tokens/s and MFU."""

  step_cost: dict[str, float]
  peak_flops_total: float | None = None

  @property
  def columns(self) -> list[str]:
    return ["tokens_per_sec"] + (["mfu"] if self.peak_flops_total else [])

  def at(self, steps_per_sec: float | None) -> dict[str, float]:
    """{"tokens_per_sec", "mfu"} at this step rate: MFU only when the peak is known; {} without a rate."""
    if not steps_per_sec:
      return {}
    figures = {"tokens_per_sec": steps_per_sec * self.step_cost["tokens"]}
    if self.peak_flops_total:
      figures["mfu"] = steps_per_sec * self.step_cost["flops"] / self.peak_flops_total
    return figures

  def summary(self, steps_per_sec: float | None) -> dict[str, float]:
    """The summary.json entries: the step's tokens and FLOPs, train_tokens_per_sec, train_mfu."""
    figures = {"step_tokens": self.step_cost["tokens"], "step_flops": self.step_cost["flops"]}
    figures.update({f"train_{name}": float(f"{value:.4g}") for name, value in self.at(steps_per_sec).items()})
    return figures
