"""Device mesh and sharding rules. Pure: no I/O."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")  # the batch dimension is split over both axes
PARAM_RULES = ("replicate", "fsdp", "auto")


def resolve_mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
  """Fills in a -1 axis so that data * fsdp == num_devices, or raises ValueError."""
  if data == -1 and fsdp == -1:
    raise ValueError("mesh.data and mesh.fsdp cannot both be -1")
  for name, size in (("mesh.data", data), ("mesh.fsdp", fsdp)):
    if size == 0 or size < -1:
      raise ValueError(f"{name}={size}: must be a positive device count or -1 (all remaining devices)")
  if data == -1:
    if num_devices % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} does not divide the {num_devices} available devices")
    data = num_devices // fsdp
  elif fsdp == -1:
    if num_devices % data:
      raise ValueError(f"mesh.data={data} does not divide the {num_devices} available devices")
    fsdp = num_devices // data
  if data * fsdp != num_devices:
    raise ValueError(
        f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} devices, but {num_devices} are available"
    )
  return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a ("data", "fsdp") mesh with Auto axis types over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  data, fsdp = resolve_mesh_shape(data, fsdp, len(devices))
  # Auto axes: explicit-sharding mode (jax.make_mesh's default) rejects FSDP
  # param layouts inside jit ("illegally sharded result").
  axis_types = (jax.sharding.AxisType.Auto,) * 2
  return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"), axis_types=axis_types)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(DATA_AXES))


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


def state_shardings(abstract_tree: Any, mesh: Mesh, rule: str = "auto", min_size: int = 1024) -> Any:
  """Shardings for every leaf of a (possibly abstract) pytree under a param rule.

  The rule looks only at shapes, so optimizer moments get the layout of the
  param they mirror and scalars (step counts) stay replicated.
  """
  if rule not in PARAM_RULES:
    raise ValueError(f"mesh.params={rule!r}: choose one of {', '.join(PARAM_RULES)}")
  fsdp_size = mesh.shape["fsdp"]
  use_fsdp = rule == "fsdp" or (rule == "auto" and fsdp_size > 1)

  def leaf_sharding(leaf):
    shape = getattr(leaf, "shape", ())
    spec = fsdp_spec(shape, fsdp_size, min_size) if use_fsdp else P()
    return NamedSharding(mesh, spec)

  return jax.tree.map(leaf_sharding, abstract_tree)
