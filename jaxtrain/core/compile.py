"""Ahead-of-time compilation of a step, once per distinct input shape."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import jax

log = logging.getLogger(__name__)


def shape_signature(tree: Any) -> tuple:
  """Hashable (path, shape, dtype) description of a batch."""
  return tuple((jax.tree_util.keystr(path), leaf.shape, str(leaf.dtype))
               for path, leaf in jax.tree_util.tree_leaves_with_path(tree))


class ShapeCompiledStep:
  """A jitted step compiled ahead of time for each batch shape it meets.

  Compiling explicitly (lower + compile) makes compilation countable and
  timeable, and turns a silent retrace for an unchanged shape into an error:
  a compiled executable only accepts the exact types it was built for.
  A second distinct batch shape is legitimate but costly, so it is logged.
  """

  def __init__(self, fn: Callable, *, name: str, in_shardings: Any, out_shardings: Any,
               donate_state: bool = True):
    self.name = name
    self._jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                           donate_argnums=(0,) if donate_state else ())
    self._compiled: dict[tuple, Any] = {}
    self._traced: dict[tuple, Any] = {}  # traces made for output_shapes, used up by compile
    self._last_exe: Any = None
    self._last_quick_key: tuple | None = None
    self.compile_seconds = 0.0

  @property
  def num_compilations(self) -> int:
    return len(self._compiled)

  def output_shapes(self, state: Any, batch: Any) -> Any:
    """The step's outputs (ShapeDtypeStructs) for `state` and `batch`, concrete or abstract.

    Tracing is a good part of start-up, so the trace is kept and the compile for
    the same batch shape lowers it instead of tracing the step again.
    """
    key = shape_signature(batch)
    if key not in self._traced:
      self._traced[key] = self._jitted.trace(state, batch)
    return self._traced[key].out_info

  def compile(self, state: Any, batch: Any) -> Any:
    """Compiles for `batch`'s shape (no-op if already compiled) and returns the executable."""
    key = shape_signature(batch)
    exe = self._compiled.get(key)
    if exe is None:
      start = time.perf_counter()
      traced = self._traced.pop(key, None) or self._jitted.trace(state, batch)
      exe = traced.lower().compile()
      self.compile_seconds += time.perf_counter() - start
      self._compiled[key] = exe
      if len(self._compiled) > 1:
        log.warning("%s compiled again for a new batch shape %s (%d shapes so far); "
                    "pad or drop ragged batches to avoid recompiling", self.name, key, len(self._compiled))
    self._last_exe = exe
    return exe

  def __call__(self, state: Any, batch: Any) -> Any:
    # Per-step fast path: leaf shapes and dtypes only (the full signature with
    # paths costs ~7x more and is needed only when compiling).
    quick_key = tuple((leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(batch))
    if quick_key != self._last_quick_key:
      self.compile(state, batch)  # sets _last_exe
      self._last_quick_key = quick_key
    return self._last_exe(state, batch)

  def memory_analysis(self) -> Any:
    """XLA's memory estimate for the most recently used executable (None if unavailable)."""
    try:
      return self._last_exe.memory_analysis() if self._last_exe is not None else None
    except Exception:  # backends without the analysis
      return None
