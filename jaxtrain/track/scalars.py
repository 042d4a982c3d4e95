"""facts/scalars.csv: one row per logged train interval and per evaluation."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

LEADING = ["step", "epoch", "split", "loss"]
TRAILING = ["lr", "steps_per_sec", "epoch_time_s", "max_memory_mib", "input_wait_frac"]


def columns_for(metric_names: Iterable[str]) -> list[str]:
  """Fixed header: step, epoch, split, loss, the task's metrics, then loop figures."""
  middle = sorted(set(metric_names) - set(LEADING) - set(TRAILING))
  return LEADING + middle + TRAILING


class ScalarWriter:
  """Appends rows to a CSV with a header fixed at start; unknown keys are an error.

  Every row also goes to each of `sinks` (jaxtrain/track/writers.py: metrics.jsonl,
  TensorBoard, W&B, MLflow, the experiment database) as (step, split, metrics).
  """

  def __init__(self, path: Path, columns: list[str], enabled: bool = True, sinks: Sequence[Any] = ()):
    self.path = path
    self.columns = columns
    self.enabled = enabled
    self.sinks = list(sinks)
    if enabled:
      path.parent.mkdir(parents=True, exist_ok=True)
      if not path.exists() or path.stat().st_size == 0:
        with path.open("w", newline="") as f:
          csv.writer(f).writerow(columns)
      else:
        # Resuming: keep the existing header so old and new rows line up.
        with path.open(newline="") as f:
          self.columns = next(csv.reader(f), columns)
    self._file: Any = None  # opened at the first row and kept open (one system call per row)

  def write(self, row: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    unknown = set(row) - set(self.columns)
    if unknown:
      raise KeyError(f"scalars.csv has no column for {sorted(unknown)}")
    if self._file is None or self._file.closed:
      self._file = self.path.open("a", newline="")
    csv.writer(self._file).writerow([_format(row.get(c)) for c in self.columns])
    self._file.flush()  # each row reaches the file at once: a killed run keeps its rows
    metrics = {k: v for k, v in row.items() if k not in ("step", "split") and v is not None}
    for sink in self.sinks:
      sink.write(int(row["step"]), str(row["split"]), metrics)

  def flush(self) -> None:
    """Makes the sinks that buffer rows write every row so far (the loop calls this at checkpoints)."""
    for sink in self.sinks:
      flush = getattr(sink, "flush", None)
      if flush is not None:
        flush()

  def close(self) -> None:
    """Closes scalars.csv (the sinks are closed by their owner, RunTracking)."""
    if self._file is not None:
      self._file.close()


def _format(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def drop_rows_after(path: Path, step: int) -> int:
  """Removes rows logged after `step` (a resumed run replays those steps identically).

  Returns the number of rows removed.
  """
  if not path.exists():
    return 0
  with path.open(newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    return 0
  header, body = rows[0], rows[1:]
  kept = [r for r in body if r and int(float(r[0])) <= step]
  if len(kept) != len(body):
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
      csv.writer(f).writerows([header] + kept)
    tmp.replace(path)
  return len(body) - len(kept)


def read_scalars(path: Path) -> list[dict[str, str]]:
  """Rows of a scalars.csv as dicts of strings."""
  with path.open(newline="") as f:
    return list(csv.DictReader(f))
