"""facts/events.jsonl: one JSON object per line for each lifecycle event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from jaxtrain.track.secrets import redact

EVENTS = ("on_start", "on_eval", "on_checkpoint", "on_epoch_end", "on_train_end", "on_exception", "on_preemption")


# Events that may come every few steps (an epoch of the digits is five steps). Their lines
# wait in the file's buffer for at most FLUSH_SECS; any other event writes them out.
FREQUENT_EVENTS = frozenset({"on_epoch_end"})
FLUSH_SECS = 1.0


class EventWriter:
  """Appends events; each line reaches the file at once, except frequent ones, so a killed
  run keeps what it wrote (at most the last second of epoch ends is lost).

  The file stays open between events, and epoch ends are written in batches: with
  every core busy computing a step, each system call can wait for a time slice.
  Opening and closing the file for every event cost ~0.7 ms a time; a write per
  epoch end is one more system call every five steps of the digits.
  """

  def __init__(self, path: Path, enabled: bool = True, flush_secs: float = FLUSH_SECS,
               clock: Callable[[], float] = time.monotonic):
    self.path = path
    self.enabled = enabled
    self.flush_secs = flush_secs
    self._clock = clock
    self._last_flush = clock()
    self._file: Any = None
    if enabled:
      path.parent.mkdir(parents=True, exist_ok=True)

  def write(self, event: str, **fields: Any) -> None:
    if event not in EVENTS:
      raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
    if not self.enabled:
      return
    # Messages and tracebacks may quote a URL with a password or a secret from the environment.
    # (The event name is one of EVENTS, so only the fields need it.)
    record = {"event": event, "time": round(time.time(), 3), **redact(fields)}
    if self._file is None or self._file.closed:
      self._file = self.path.open("a")
    self._file.write(json.dumps(record, default=_jsonable) + "\n")
    now = self._clock()
    if event not in FREQUENT_EVENTS or now - self._last_flush >= self.flush_secs:
      self._file.flush()
      self._last_flush = now

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


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
