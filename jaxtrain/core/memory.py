"""Memory per device of a compiled step, known before it first runs.

XLA's memory analysis of an ahead-of-time compiled executable gives, per
device, the bytes of its arguments (the state and batch shards), outputs,
temporaries (activations, gradients, collectives' buffers) and the part of
the outputs that reuses donated inputs. Their sum is what one step needs at
its peak; comparing it with the device's capacity predicts an out-of-memory
error before the first step rather than after minutes of start-up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

MIB = 2**20


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """Bytes one device needs for one call of a compiled step."""

  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int  # outputs written into donated inputs: counted once
  code_bytes: int
  capacity_bytes: int | None  # what the device can hold (None: unknown, e.g. CPU)

  @property
  def total_bytes(self) -> int:
    """Peak estimate: arguments + outputs not aliased to them + temporaries + code."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

  @property
  def fits(self) -> bool:
    return self.capacity_bytes is None or self.total_bytes <= self.capacity_bytes

  def describe(self) -> str:
    """One line for the start-up log."""
    line = (f"{self.total_bytes / MIB:.1f} MiB per device (state and batch {self.argument_bytes / MIB:.1f}, "
            f"temporaries {self.temp_bytes / MIB:.1f}, new outputs {(self.output_bytes - self.alias_bytes) / MIB:.1f})")
    if self.capacity_bytes:
      line += f" of {self.capacity_bytes / MIB:.0f} MiB ({100 * self.total_bytes / self.capacity_bytes:.0f}%)"
    return line


def device_capacity(device: jax.Device) -> int | None:
  """Bytes the runtime lets this device allocate (None where it does not say, as on CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # backends without memory statistics
    return None
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def step_memory(compiled: Any, device: jax.Device | None = None) -> StepMemory | None:
  """The memory estimate of a compiled executable (None when the backend gives none)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # not every backend implements it
    return None
  if analysis is None:
    return None
  device = device or jax.local_devices()[0]
  return StepMemory(argument_bytes=analysis.argument_size_in_bytes, output_bytes=analysis.output_size_in_bytes,
                    temp_bytes=analysis.temp_size_in_bytes, alias_bytes=analysis.alias_size_in_bytes,
                    code_bytes=analysis.generated_code_size_in_bytes, capacity_bytes=device_capacity(device))
