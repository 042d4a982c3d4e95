"""Preemption: signals become "checkpoint this step, then exit with a requeue code".

SIGTERM (what SLURM, Kubernetes and Cloud TPU send before taking a machine) and
SIGINT (Ctrl-C), plus any configured signal (SLURM's `--signal=USR1@120`
pre-timeout warning), set a flag that the loop checks after every step. A
second SIGINT exits at once. With several processes (`jax.distributed`), the
processes must agree on the step to save at, so Orbax's preemption sync point
(`CheckpointManager.reached_preemption`) decides: SIGTERM goes to JAX's own
notifier, and the other configured signals are passed on to it as SIGTERM.
"""

from __future__ import annotations

import os
import signal
from typing import Callable, Sequence

import jax

# sysexits.h EX_TEMPFAIL: "temporary failure, try again". Launch scripts
# requeue a job that exits with it; see README "When runs get interrupted".
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
  """The run saved a checkpoint and stopped because it was asked to."""

  exit_code = PREEMPTED_EXIT_CODE

  def __init__(self, signal_name: str, step: int):
    super().__init__(f"preempted by {signal_name} at step {step}; checkpoint saved, resume with the same run.dir")
    self.signal_name = signal_name
    self.step = step


class PreemptionWatcher:
  """Context manager installing the handlers; `should_stop(step)` is polled by the loop."""

  def __init__(self, signal_names: Sequence[str] = ("SIGTERM", "SIGINT"),
               sync_point: Callable[[int], bool] | None = None):
    self.multiprocess = jax.process_count() > 1
    # Multi-process: JAX's coordination service owns SIGTERM and Orbax's sync
    # point turns it into the same step on every process.
    self.sync_point = sync_point if self.multiprocess else None
    self.signals = [_signal_by_name(n) for n in signal_names
                    if not (self.multiprocess and n == "SIGTERM")]
    self.received: str | None = None
    self._forwarded: str | None = None  # a local signal passed on as SIGTERM (several processes)
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "PreemptionWatcher":
    for sig in self.signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals to the host program
        pass
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.multiprocess:
      # A flag here would stop this process alone, at its own step, and leave
      # the others waiting in a collective. SIGTERM reaches JAX's preemption
      # notifier instead, and the sync point stops every process at one step.
      self._forwarded = name
      os.kill(os.getpid(), signal.SIGTERM)
      return
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
    self.received = name

  def should_stop(self, step: int) -> bool:
    if self.received is not None:
      return True
    if self.sync_point is not None and self.sync_point(step):
      self.received = self._forwarded or "preemption sync point"
      return True
    return False


def _signal_by_name(name: str) -> signal.Signals:
  try:
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
  except KeyError:
    from jaxtrain.errors import ConfigError
    raise ConfigError(f"trainer.preemption_signals: unknown signal {name!r}") from None
