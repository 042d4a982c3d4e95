"""Sharding rules: from param paths and logical axis names to PartitionSpecs. Pure: no I/O.

A param's layout is decided by the first source that names it:

1. `mesh.rules`: (regex, spec) pairs over '/'-joined param paths, first match
   wins, like big_vision's sharding tactics. A spec lists one mesh axis (or a
   list of axes, or null) per dimension; `[]` means replicated.
2. The task's logical axis names (`Task.logical_axes`, e.g. ("embed", "mlp")),
   mapped to mesh axes by `mesh.logical_rules`; params smaller than
   `mesh.fsdp_min_size` elements stay replicated.
3. The shape rule `mesh.params` (replicate | fsdp | auto), as for any other leaf.

A mesh axis that does not divide its dimension, or that is already used by an
earlier dimension, is dropped for that dimension (the dimension stays whole on
those devices), so one rule set serves every mesh shape and model size.

Optimizer moments get the layout of the param they mirror; with `mesh.optimizer=zero1` they are additionally
split over the batch axes (ZeRO stage 1: each data-parallel replica keeps and
updates a slice of the optimizer state; XLA inserts the gathers).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxtrain.core.mesh import BATCH_AXES, PARAM_RULES, fsdp_spec

OPTIMIZER_LAYOUTS = ("params", "zero1")

# Logical names used by the built-in transformer (tasks may add their own).
# FSDP splits the model width, tensor parallelism the heads, the MLP hidden
# units and the vocabulary (Megatron-style column/row pairs).
DEFAULT_LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("seq", None),
    ("layers", None),
)


def path_name(path: Sequence[Any]) -> str:
  """'/'-joined names of a pytree key path, e.g. 'params/decoder/Dense_0/kernel'."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _axes_of(entry: Any) -> tuple[str, ...]:
  if entry is None:
    return ()
  if isinstance(entry, str):
    return (entry,)
  return tuple(entry)


def fit_spec(spec: Sequence[Any], shape: Sequence[int], mesh: Mesh) -> P:
  """`spec` made valid for `shape` on `mesh`: per dimension, keeps the mesh axes
  (in order) whose product divides the dimension and that no earlier dimension
  uses; axes of size 1 are dropped too, so equal layouts compare equal."""
  if len(spec) > len(shape):
    raise ValueError(f"spec {tuple(spec)} has more entries than the {len(shape)} dimensions of {tuple(shape)}")
  used: set[str] = set()
  fitted: list[Any] = []
  for dim, entry in zip(shape, list(spec) + [None] * (len(shape) - len(spec))):
    kept: list[str] = []
    product = 1
    for axis in _axes_of(entry):
      if axis not in mesh.shape:
        raise ValueError(f"spec {tuple(spec)} names mesh axis {axis!r}; the mesh has {', '.join(mesh.axis_names)}")
      size = mesh.shape[axis]
      if size == 1 or axis in used or dim % (product * size):
        continue
      kept.append(axis)
      product *= size
    used.update(kept)
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  while fitted and fitted[-1] is None:  # P('x', None) and P('x') are the same layout
    fitted.pop()
  return P(*fitted)


def compile_rules(rules: Iterable[Sequence[Any]]) -> list[tuple[re.Pattern, list[Any]]]:
  """[(regex, spec)] pairs from config, regexes compiled; ValueError names a bad one."""
  compiled = []
  for i, rule in enumerate(rules or ()):
    if len(rule) != 2:
      raise ValueError(f"mesh.rules[{i}]={list(rule)}: expected [regex, spec]")
    pattern, spec = rule
    try:
      compiled.append((re.compile(pattern), list(spec or [])))
    except re.error as err:
      raise ValueError(f"mesh.rules[{i}]: bad regex {pattern!r} ({err})") from None
  return compiled


def logical_to_mesh(names: Sequence[str | None], logical_rules: dict[str, Any]) -> list[Any]:
  """Mesh axes for a tuple of logical names (unknown names stay whole)."""
  return [logical_rules.get(name) if name is not None else None for name in names]


def param_specs(abstract_params: Any, mesh: Mesh, *, rules: Iterable[Sequence[Any]] = (),
                logical_axes: Any = None, logical_rules: Iterable[Sequence[Any]] | None = None,
                fallback: str = "auto", fsdp_min_size: int = 1024) -> Any:
  """A PartitionSpec for every param: regex rules, then logical names, then the shape rule."""
  if fallback not in PARAM_RULES:
    raise ValueError(f"mesh.params={fallback!r}: choose one of {', '.join(PARAM_RULES)}")
  compiled = compile_rules(rules)
  logical = dict(DEFAULT_LOGICAL_RULES if logical_rules is None else [tuple(r) for r in logical_rules])
  names_by_path = {}
  if logical_axes is not None:
    is_names = lambda x: isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x)
    for path, names in jax.tree_util.tree_leaves_with_path(logical_axes, is_leaf=is_names):
      names_by_path[path_name(path)] = names
  use_fsdp = fallback == "fsdp" or (fallback == "auto" and mesh.shape.get("fsdp", 1) > 1)

  def spec_for(path, leaf) -> P:
    name, shape = path_name(path), tuple(leaf.shape)
    for pattern, spec in compiled:
      if pattern.fullmatch(name) or pattern.search(name):
        return fit_spec(spec, shape, mesh)
    if name in names_by_path:
      if math.prod(shape) < fsdp_min_size:  # norm scales, biases: gathering them costs more than they weigh
        return P()
      return fit_spec(logical_to_mesh(names_by_path[name], logical), shape, mesh)
    if use_fsdp:
      return fsdp_spec(shape, mesh.shape.get("fsdp", 1), fsdp_min_size)
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, abstract_params)


def zero1_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """`spec` with the batch axes added on the largest dimension they divide (ZeRO-1)."""
  free = [a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1 and a not in _used_axes(spec)]
  if not free:
    return spec
  entries = list(spec) + [None] * (len(shape) - len(spec))
  best = None
  for dim, size in enumerate(shape):
    combined = _axes_of(entries[dim]) + tuple(free)
    candidate = fit_spec([*entries[:dim], combined, *entries[dim + 1:]], shape, mesh)
    gained = len(_used_axes(candidate)) - len(_used_axes(spec))
    if gained and (best is None or (gained, size) > best[0]):
      best = ((gained, size), candidate)
  return best[1] if best else spec


def _used_axes(spec: P) -> set[str]:
  return {axis for entry in spec for axis in _axes_of(entry)}


def state_shardings(abstract_state: Any, mesh: Mesh, param_spec_tree: Any, *, optimizer: str = "params",
                    fallback: str = "auto", fsdp_min_size: int = 1024) -> Any:
  """NamedShardings for a whole TrainState given the params' specs.

  params and EMA params take `param_spec_tree`; optimizer-state leaves that
  mirror a param take its spec (ZeRO-1: plus the batch axes); every other
  leaf (step, PRNG key, model and extra state, counters) the shape rule.
  """
  if optimizer not in OPTIMIZER_LAYOUTS:
    raise ValueError(f"mesh.optimizer={optimizer!r}: choose one of {', '.join(OPTIMIZER_LAYOUTS)}")
  use_fsdp = fallback == "fsdp" or (fallback == "auto" and mesh.shape.get("fsdp", 1) > 1)

  def by_shape(leaf) -> NamedSharding:
    shape = getattr(leaf, "shape", ())
    return NamedSharding(mesh, fsdp_spec(shape, mesh.shape.get("fsdp", 1), fsdp_min_size) if use_fsdp else P())

  is_spec = lambda x: isinstance(x, P)
  params = jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_spec_tree, is_leaf=is_spec)
  # Optax keeps param-shaped trees (moments, accumulators) under its own
  # prefixes, e.g. opt_state/1/0/mu/<param path>: a leaf mirrors the param
  # whose path ends its own and whose shape it has. Matching paths works for
  # every wrapper (masked, multi_transform, MultiSteps, inject_hyperparams),
  # where rebuilding the state from placeholders (optax.tree_map_params)
  # does not survive label functions that look at the params.
  param_paths = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state.params):
    param_paths[tuple(path_name(path).split("/"))] = leaf.shape
  specs = {tuple(path_name(path).split("/")): spec for path, spec in
           jax.tree_util.tree_leaves_with_path(param_spec_tree, is_leaf=is_spec)}

  def opt_leaf(path, leaf) -> NamedSharding:
    parts = tuple(path_name(path).split("/"))
    for start in range(len(parts)):
      suffix = parts[start:]
      if param_paths.get(suffix) == getattr(leaf, "shape", None):
        spec = specs[suffix]
        if optimizer == "zero1":
          spec = zero1_spec(spec, leaf.shape, mesh)
        return NamedSharding(mesh, spec)
    return by_shape(leaf)

  opt = jax.tree_util.tree_map_with_path(opt_leaf, abstract_state.opt_state)
  rest = jax.tree.map(by_shape, abstract_state.replace(params=None, opt_state=None, ema_params=None))
  return rest.replace(params=params, opt_state=opt,
                      ema_params=params if abstract_state.ema_params is not None else None)


def describe(spec_tree: Any) -> dict[str, str]:
  """{param path: spec} for logs, golden tests and the start-up report."""
  return {path_name(path): str(spec) for path, spec in
          jax.tree_util.tree_leaves_with_path(spec_tree, is_leaf=lambda x: isinstance(x, P))}
