"""Train-metric logging, read one interval late so the host never waits on the device."""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any

import jax

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.core.hardware import StepThroughput, total_peak_flops
from jaxtrain.track.scalars import ScalarWriter


def max_memory_mib() -> float:
  """Peak device memory when the backend reports it (GPU/TPU), else the host's peak RSS."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def step_throughput(cfg: Any, engine: Any) -> StepThroughput | None:
  """Tokens and FLOPs per train step (the task's `step_cost`) with the mesh's peak
  FLOP/s at trainer.precision; None for tasks that do not count their cost."""
  cost = engine.task.step_cost(cfg.data.batch_size)
  if cost is None:
    return None
  peak = total_peak_flops(jax.devices()[0].device_kind, engine.mesh.devices.size,
                          cfg.trainer.precision, cfg.trainer.peak_tflops)
  return StepThroughput(cost, peak)


@dataclasses.dataclass
class LiveStats:
  """The newest host-side figures, shared with the progress display."""

  step: int = 0
  loss: float | None = None
  bad_steps: int = 0  # consecutive skipped updates at `step`
  steps_per_sec: float | None = None
  epoch_time_s: float | None = None


class LogTrainMetrics(PeriodicAction):
  """Writes a `train` row to scalars.csv every `log_every` steps.

  At step N it keeps a reference to step N's on-device metrics and writes the
  row of the previous log step, whose values are long computed: no host sync
  on the device's critical path. On `sync_every` steps (the checkpoint steps)
  the pending row is written at once, and every sink's buffered rows with it,
  so every row up to a checkpoint is stored when a resume starts from it.
  `close()` writes the last pending row.
  With a `throughput`, rows also carry tokens_per_sec (and mfu when the peak is known).
  """

  def __init__(self, scalars: ScalarWriter, live: LiveStats, log_every: int, sync_every: int | None = None,
               throughput: StepThroughput | None = None, **trigger: Any):
    super().__init__(every_steps=(log_every, sync_every or 0), **trigger)
    self.scalars = scalars
    self.throughput = throughput
    self.live = live
    self.log_every = log_every
    self.sync_every = sync_every
    self._pending: tuple[int, float, Any, float, float | None, float | None] | None = None
    self._prev_step: int | None = None
    self._prev_time: float | None = None
    self._wait_mark: tuple[float, float] | None = None  # (perf_counter, ctx.input_wait_secs) at the last row

  def run(self, ctx: LoopContext) -> None:
    if ctx.train_metrics is None:
      return  # no step ran in this call (a finished run started again)
    if ctx.step % self.log_every == 0 or ctx.final:
      self._record(ctx)
    if self.sync_every and ctx.step % self.sync_every == 0:
      self._flush()
      self.scalars.flush()  # the database's buffered rows too

  def _record(self, ctx: LoopContext) -> None:
    now = time.perf_counter()
    rate = None
    if self._prev_step is not None and ctx.step > self._prev_step:
      rate = (ctx.step - self._prev_step) / (now - self._prev_time)
    self._prev_step, self._prev_time = ctx.step, now
    # The first interval starts with the loop, so even a single row has a wait fraction.
    mark_time, mark_wait = self._wait_mark or (ctx.started_at, 0.0)
    wait_frac = (ctx.input_wait_secs - mark_wait) / (now - mark_time) if now > mark_time else None
    self._wait_mark = (now, ctx.input_wait_secs)
    self._flush()
    self._pending = (ctx.step, ctx.epoch, ctx.train_metrics, rate, self.live.epoch_time_s, wait_frac)

  def _flush(self) -> None:
    if self._pending is None:
      return
    step, epoch, device_metrics, rate, epoch_time, wait_frac = self._pending
    self._pending = None
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    row = {"step": step, "epoch": round(epoch, 4), "split": "train", "steps_per_sec": rate,
           "epoch_time_s": epoch_time, "max_memory_mib": max_memory_mib()}
    if "input_wait_frac" in self.scalars.columns:  # absent from the header of a run begun before it existed
      row["input_wait_frac"] = wait_frac
    row.update({k: v for k, v in metrics.items() if k in self.scalars.columns})
    if self.throughput is not None:
      row.update(self.throughput.at(rate))
    self.scalars.write(row)
    self.live.step, self.live.loss = step, metrics.get("loss")
    self.live.bad_steps = int(metrics.get("bad_steps", 0))
    if rate is not None:
      self.live.steps_per_sec = rate

  def close(self) -> None:
    self._flush()


class StopOnBadUpdates(PeriodicAction):
  """Stops the run once `max_bad_steps` consecutive updates were skipped.

  Reads the count that the train-metric logger brought to the host, so it
  costs no sync of its own; the skipped steps left the params untouched, so
  the last checkpoint holds the last good params.
  """

  def __init__(self, live: LiveStats, max_bad_steps: int, **trigger: Any):
    super().__init__(at_end=False, **trigger)
    self.live = live
    self.max_bad_steps = max_bad_steps

  def run(self, ctx: LoopContext) -> None:
    if self.live.bad_steps >= self.max_bad_steps:
      ctx.book.stop_reason = (f"{self.live.bad_steps} consecutive updates skipped at step {self.live.step} "
                              f"(non-finite or spiking loss; trainer.max_bad_steps={self.max_bad_steps})")
      ctx.book.diverged = True
      ctx.stop_requested = True


class EpochEnd(PeriodicAction):
  """Writes `on_epoch_end` with the epoch's wall time at every epoch boundary.

  Not bound to exact steps: a call of several steps (trainer.steps_per_call) may
  cross one or more epoch ends, each written after it with its own epoch and step
  and the call's time shared evenly among them.
  """

  step_exact = False

  def __init__(self, events: Any, live: LiveStats, steps_per_epoch: int, **trigger: Any):
    super().__init__(every_steps=steps_per_epoch, at_end=False, **trigger)
    self.events = events
    self.live = live
    self.steps_per_epoch = steps_per_epoch
    self._epoch_start: float | None = None  # None: the loop's start

  def run(self, ctx: LoopContext) -> None:
    now = time.perf_counter()
    since = ctx.step - 1 if ctx.call_start is None else ctx.call_start
    ends = range(since // self.steps_per_epoch + 1, ctx.step // self.steps_per_epoch + 1)
    self.live.epoch_time_s = (now - (self._epoch_start or ctx.started_at)) / max(len(ends), 1)
    self._epoch_start = now
    for epoch in ends:
      self.events.write("on_epoch_end", step=epoch * self.steps_per_epoch, epoch=epoch,
                        epoch_time_s=round(self.live.epoch_time_s, 4))
