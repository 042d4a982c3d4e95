"""facts/events.jsonl: one JSON object per line for each lifecycle event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jaxtrain.track.secrets import redact

EVENTS = ("on_start", "on_eval", "on_checkpoint", "on_epoch_end", "on_train_end", "on_exception", "on_preemption")


class EventWriter:
  """Appends events; each line is flushed so a killed run keeps what it wrote."""

  def __init__(self, path: Path, enabled: bool = True):
    self.path = path
    self.enabled = enabled
    if enabled:
      path.parent.mkdir(parents=True, exist_ok=True)

  def write(self, event: str, **fields: Any) -> None:
    if event not in EVENTS:
      raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
    if not self.enabled:
      return
    # Messages and tracebacks may quote a URL with a password or a secret from the environment.
    record = redact({"event": event, "time": round(time.time(), 3), **fields})
    with self.path.open("a") as f:
      f.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


def read_events(path: Path) -> list[dict[str, Any]]:
  """All events of a run, in order."""
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
