"""Fault injection for resume testing: JAXTRAIN_FAULT=<kind>@<step>.

Used by `python -m jaxtrain.verify_resume` and the tests; without the variable
nothing is added to the loop. The fault fires after the step's other actions,
so at a checkpoint step a `sigkill` lands while the async save is in flight.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from jaxtrain.actions.base import LoopContext, PeriodicAction
from jaxtrain.errors import ConfigError

FAULT_ENV = "JAXTRAIN_FAULT"
FAULT_KINDS = ("sigkill", "sigterm", "sigint", "exception")


class InjectedFault(RuntimeError):
  """The exception raised by the `exception` fault."""


class InjectFault(PeriodicAction):
  """Kills, signals or raises at one step."""

  def __init__(self, kind: str, step: int, **trigger: Any):
    super().__init__(on_steps=(step,), at_end=False, **trigger)
    self.kind = kind

  def run(self, ctx: LoopContext) -> None:
    if self.kind == "exception":
      raise InjectedFault(f"fault injected at step {ctx.step}")
    sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[self.kind]
    os.kill(os.getpid(), sig)


def fault_from_env() -> InjectFault | None:
  """The action described by JAXTRAIN_FAULT, or None when it is unset."""
  spec = os.environ.get(FAULT_ENV, "").strip()
  if not spec:
    return None
  kind, _, step = spec.partition("@")
  if kind not in FAULT_KINDS or not step.isdigit():
    raise ConfigError(f"{FAULT_ENV}={spec!r}: expected <kind>@<step> with kind one of {', '.join(FAULT_KINDS)}")
  return InjectFault(kind, int(step))
