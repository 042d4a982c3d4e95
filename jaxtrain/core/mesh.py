"""The device mesh and the shape-based FSDP rule. Pure: no I/O. (Rules by path and name: sharding.py.)"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both; "tensor" devices share a batch shard
DATA_AXES = BATCH_AXES
PARAM_RULES = ("replicate", "fsdp", "auto")


def resolve_mesh_shape(data: int, fsdp: int, num_devices: int, tensor: int = 1) -> tuple[int, int, int]:
  """Fills in the one -1 axis so that data * fsdp * tensor == num_devices, or raises ValueError."""
  sizes = {"mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor}
  for name, size in sizes.items():
    if size == 0 or size < -1:
      raise ValueError(f"{name}={size}: must be a positive device count or -1 (all remaining devices)")
  free = [name for name, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"{' and '.join(free)} cannot both be -1")
  if free:
    known = math.prod(size for size in sizes.values() if size != -1)
    if num_devices % known:
      fixed = " x ".join(f"{n}={s}" for n, s in sizes.items() if s != -1)
      raise ValueError(f"{fixed} = {known} devices does not divide the {num_devices} available devices")
    sizes[free[0]] = num_devices // known
  total = math.prod(sizes.values())
  if total != num_devices:
    shape = " x ".join(f"{n}={s}" for n, s in sizes.items())
    raise ValueError(f"{shape} = {total} devices, but {num_devices} are available")
  return sizes["mesh.data"], sizes["mesh.fsdp"], sizes["mesh.tensor"]


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None,
              tensor: int = 1) -> Mesh:
  """Builds a ("data", "fsdp", "tensor") mesh with Auto axis types over `devices` (default: all).

  Tensor-parallel devices are the innermost axis, so they are neighbours in
  the device list (on GPUs: the same host's fast interconnect).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(data, fsdp, len(devices), tensor)
  # Auto axes: explicit-sharding mode (jax.make_mesh's default) rejects FSDP
  # param layouts inside jit ("illegally sharded result").
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data and fsdp axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same full value on every device."""
  return NamedSharding(mesh, P())


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int) -> P:
  """Shards the largest dimension divisible by the fsdp axis; small arrays stay replicated."""
  if fsdp_size <= 1 or math.prod(shape) < min_size:
    return P()
  candidates = [(size, dim) for dim, size in enumerate(shape) if size % fsdp_size == 0]
  if not candidates:
    return P()
  _, dim = max(candidates)  # largest size; ties go to the later dim
  spec: list[Any] = [None] * len(shape)
  spec[dim] = "fsdp"
  return P(*spec)
