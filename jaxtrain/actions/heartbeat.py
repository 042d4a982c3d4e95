"""heartbeat.json: proof of life for an external watchdog.

A watchdog (cron, a cluster epilog, a sidecar) reads `time` and `phase`: a run
whose heartbeat is older than a few intervals while its phase is `training` is
hung, not slow, because a slow run still beats between steps.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from jaxtrain.actions.base import LoopContext, PeriodicAction

PHASES = ("starting", "training", "evaluating", "checkpointing", "finished", "preempted", "failed")


class Heartbeat:
  """Rewrites one small JSON file atomically: step, time, phase, pid, host."""

  def __init__(self, path: Path, enabled: bool = True):
    self.path = path
    self.enabled = enabled

  def mark(self, step: int, phase: str, **fields: Any) -> None:
    if phase not in PHASES:
      raise ValueError(f"unknown heartbeat phase {phase!r}; known: {', '.join(PHASES)}")
    if not self.enabled:
      return
    record = {"step": int(step), "time": round(time.time(), 3), "phase": phase, "pid": os.getpid(),
              "host": socket.gethostname(), **fields}
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(self.path)  # readers never see a half-written file


class BeatWhileTraining(PeriodicAction):
  """Marks `training` every `every_secs` seconds from inside the loop."""

  def __init__(self, heartbeat: Heartbeat, **trigger: Any):
    super().__init__(at_end=False, **trigger)
    self.heartbeat = heartbeat

  def run(self, ctx: LoopContext) -> None:
    self.heartbeat.mark(ctx.step, "training", total_steps=ctx.total_steps)


def read_heartbeat(path: Path) -> dict[str, Any] | None:
  """The last heartbeat of a run directory's heartbeat.json, or None if there is none."""
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None
