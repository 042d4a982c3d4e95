"""Figures during training: `logging.families.<name>.enabled` and `logging.plot_every`.

Families: losses, metrics, lr (curves from facts/scalars.csv), recon, latent
and samples (the task's `reconstruct`, `embed` and `sample` views). Files are
<run_dir>/figures/<family>-<moment>-<step>.png with moment `eval` (at every
`plot_every`-th evaluation of the run, counted from step 0, so a resumed run
draws at the same steps) or `end` (once, after the last step).

The device is never kept waiting on matplotlib: curves come from host data
already on disk; the views run as small jit-compiled calls on the same eval
steps and come back in one `device_get`; the drawing itself happens on a
background thread while training continues. Only process 0 writes.
"""

from __future__ import annotations

import itertools
import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.core import mesh as mesh_lib
from jaxtrain.errors import ConfigError
from jaxtrain.track import figures
from jaxtrain.track.scalars import read_scalars

log = logging.getLogger("jaxtrain")

FAMILIES = ("losses", "metrics", "lr", "recon", "latent", "samples")
CURVE_FAMILIES = ("losses", "metrics", "lr")
# The task view each example family draws from (see Task.supports).
VIEW_OF_FAMILY = {"recon": "reconstruct", "latent": "embed", "samples": "sample"}


def enabled_families(logging_cfg: Any, task: Any) -> list[str]:
  """The families switched on in `logging.families` that the task can offer.

  A family whose view the task lacks is skipped with one info line, not an error.
  """
  chosen = [name for name in FAMILIES if getattr(logging_cfg.families, name).enabled]
  offered = []
  for name in chosen:
    view = VIEW_OF_FAMILY.get(name)
    if view and not task.supports(view):
      task_name = getattr(getattr(task, "config", None), "name", type(task).__name__)
      log.info("figures: skipping family %s: task %s offers no %s()", name, task_name, view)
      continue
    offered.append(name)
  return offered


def _check(logging_cfg: Any) -> None:
  for key, value, least in (("plot_every", logging_cfg.plot_every, 0), ("plot_examples", logging_cfg.plot_examples, 1),
                            ("plot_points", logging_cfg.plot_points, 2)):
    if value < least:
      raise ConfigError(f"logging.{key}={value}: expected an integer >= {least}")


def evals_up_to(step: int, periods: tuple[int, ...]) -> int:
  """How many steps in 1..step are a multiple of at least one of `periods` (inclusion-exclusion)."""
  total = 0
  for size in range(1, len(periods) + 1):
    for subset in itertools.combinations(periods, size):
      total += (-1) ** (size + 1) * (step // math.lcm(*subset))
  return total


class MakeFigures(PeriodicAction):
  """Draws the enabled figure families on eval steps and at the end of the run.

  `eval_every` are the evaluation periods (the same as Evaluate's). This
  action should come after Evaluate and after the train-metric logger, whose
  final row `close()` waits for before drawing the `end` curves.
  """

  def __init__(self, logging_cfg: Any, engine: Any, scalars_path: Path, eval_every: tuple[int, ...],
               figures_dir: Path | None = None, seed: int = 0):
    super().__init__(every_steps=eval_every)
    _check(logging_cfg)
    self.families = enabled_families(logging_cfg, engine.task)
    self.plot_every = logging_cfg.plot_every
    self.num_examples = logging_cfg.plot_examples
    self.max_points = logging_cfg.plot_points
    self.engine = engine
    self.scalars_path = Path(scalars_path)
    # Default: <run_dir>/figures, next to <run_dir>/facts/scalars.csv.
    self.figures_dir = Path(figures_dir or self.scalars_path.parent.parent / figures.FIGURES_DIR)
    self.writer = jax.process_index() == 0
    self._rng = jax.random.PRNGKey(seed)  # fixed: figures of successive evals stay comparable
    self._replicated = mesh_lib.replicated(engine.mesh)
    self._compiled: dict[str, Callable] = {}
    self._pending_end: tuple[int, dict[str, Any]] | None = None
    self._drawing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxtrain-figures")
    self._jobs: list[tuple[str, Future]] = []
    # Generated samples are shaded on the data's scale, not their own.
    example = engine.task.example_batch
    self._data_scale = figures.value_range(example["x"], example.get("mask"))

  def due(self, step: int, final: bool, preempted: bool = False, since: int | None = None) -> bool:
    if final:
      # Always draw the `end` figures, even when the last step was an eval step.
      return not preempted
    return super().due(step, final, preempted, since)

  def run(self, ctx: LoopContext) -> None:
    if not self.families:
      return
    if ctx.final:
      # The curves wait for close(), after the logger has written its last row.
      self._pending_end = (ctx.step, self._views(ctx.state))
      return
    if ctx.step >= ctx.total_steps or not self.plot_every:
      return  # the last step gets `end` figures instead
    if evals_up_to(ctx.step, self.every_steps) % self.plot_every == 0:
      self._draw("eval", ctx.step, self._views(ctx.state))

  def close(self) -> None:
    if self._pending_end is not None:
      step, views = self._pending_end
      self._pending_end = None
      self._draw("end", step, views)
    self._drawing.shutdown(wait=True)
    for name, job in self._jobs:
      error = job.exception()
      if error is not None:  # a figure is a side output: warn, keep the run's result
        log.warning("figures: %s failed: %s: %s", name, type(error).__name__, error)
    self._jobs.clear()

  # -------------------------------------------------------------------------
  # Device side: the task's views, in one transfer.

  def _views(self, state: Any) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    if "recon" in self.families:
      arrays["recon"] = self._call("recon", self._reconstruct_fn, state.params, state.model_state,
                                   self._first_val_batch(), self._rng)
    if "samples" in self.families:
      arrays["samples"] = self._call("samples", self._sample_fn, state.params, state.model_state, self._rng)
    if "latent" in self.families:
      parts, count = [], 0
      for batch in self._val_batches():
        parts.append(self._call("latent", self._embed_fn, state.params, state.model_state, batch))
        count += batch["x"].shape[0]
        if count >= self.max_points:
          break
      arrays["latent"] = parts
    return jax.device_get(arrays)

  def _call(self, name: str, make: Callable[[], Callable], *args: Any) -> Any:
    if name not in self._compiled:
      self._compiled[name] = jax.jit(make(), out_shardings=self._replicated)
    return self._compiled[name](*args)

  def _reconstruct_fn(self) -> Callable:
    task, n = self.engine.task, self.num_examples

    def reconstruct(params, model_state, batch, rng):
      outputs = task.reconstruct(params, model_state, batch, rng)
      return {"x": batch["x"][:n], "out": outputs[:n], **({"mask": batch["mask"][:n]} if "mask" in batch else {})}
    return reconstruct

  def _sample_fn(self) -> Callable:
    task, n = self.engine.task, self.num_examples
    return lambda params, model_state, rng: task.sample(params, model_state, rng, n)

  def _embed_fn(self) -> Callable:
    task = self.engine.task

    def embed(params, model_state, batch):
      extras = {k: batch[k] for k in ("label", "weight") if k in batch}
      return {"codes": task.embed(params, model_state, batch), **extras}
    return embed

  def _val_batches(self):
    engine = self.engine
    return engine.val_batches if engine.val_batches is not None else map(engine.put_batch, engine.val_data)

  def _first_val_batch(self) -> Any:
    return next(iter(self._val_batches()))

  # -------------------------------------------------------------------------
  # Host side: rows from disk, drawing on the background thread.

  def _draw(self, moment: str, step: int, views: dict[str, Any]) -> None:
    if not self.writer:
      return
    rows = read_scalars(self.scalars_path) if self.scalars_path.exists() else []
    for family in self.families:
      path = figures.figure_path(self.figures_dir, family, moment, step)
      job = self._drawing.submit(self._draw_family, family, path, step, moment, rows, views)
      self._jobs.append((path.name, job))

  def _draw_family(self, family: str, path: Path, step: int, moment: str, rows: list, views: dict) -> None:
    when = f"step {step}" + (" (end)" if moment == "end" else "")
    if family == "losses":
      drawn = figures.loss_curves(rows, path, f"Loss, {when}")
    elif family == "metrics":
      drawn = figures.metric_panels(rows, path, f"Metrics, {when}")
    elif family == "lr":
      drawn = figures.lr_curve(rows, path, f"Learning rate, {when}")
    elif family == "recon":
      recon = views["recon"]
      drawn = figures.reconstruction_grid(np.asarray(recon["x"]), np.asarray(recon["out"]), path,
                                          f"Validation examples and reconstructions, {when}",
                                          masks=recon.get("mask"))
    elif family == "samples":
      drawn = figures.sample_grid(np.asarray(views["samples"]), path, f"Generated samples, {when}",
                                  scale=self._data_scale)
    else:
      drawn = self._draw_latent(views["latent"], path, when)
    if drawn is None and moment == "end":
      log.info("figures: nothing logged for family %s; no %s", family, path.name)

  def _draw_latent(self, parts: list[dict[str, np.ndarray]], path: Path, when: str) -> Path:
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = joined["weight"] > 0 if "weight" in joined else np.ones(len(joined["codes"]), bool)
    codes = joined["codes"][keep][:self.max_points]
    labels = joined["label"][keep][:self.max_points] if "label" in joined else None
    return figures.latent_scatter(codes, path, f"Latent codes of {len(codes)} validation examples (PCA), {when}",
                                  labels=labels)
