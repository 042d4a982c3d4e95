"""Restoring a run from its newest valid checkpoint.

A checkpoint killed mid-save never counts (Orbax only lists committed steps).
A committed one that cannot be read (truncated file, missing item) is reported
in one line and renamed aside, never deleted, and the previous one is used.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from jaxtrain.actions.base import Bookkeeping
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.errors import ConfigError, IncompatibleCheckpoint

log = logging.getLogger("jaxtrain")

DAMAGED_SUFFIX = ".damaged"
# How long the reads a failed restore abandoned get to finish (and print) before stderr is back.
_STRAY_READS_SECS = 0.5


def restore_newest_valid(reader: Checkpointer, abstract_state: Any, make_iterator: Callable[[], Any],
                         quarantine: bool) -> tuple[Any, Bookkeeping, int, Any, list[int]] | None:
  """Tries checkpoints from the newest back.

  Returns `(state, bookkeeping, step, data_iterator, damaged_steps)`, or None
  when there is no checkpoint at all. With `quarantine` (the run's own
  directory), a damaged step folder is renamed `<step>.damaged-<time>` so the
  resumed run can write that step again.
  """
  steps = sorted(reader.all_steps(), reverse=True)
  damaged: list[int] = []
  for step in steps:
    iterator = make_iterator()
    try:
      with _quiet_sibling_read_errors():
        state, meta = reader.restore(step, abstract_state, iterator)
    except IncompatibleCheckpoint:
      iterator.close()  # a config change, not damage: nothing is set aside
      raise
    except ConfigError as err:
      iterator.close()
      damaged.append(step)
      log.warning("%s; falling back to the previous checkpoint", err)
      if quarantine:
        _set_aside(reader.directory / str(step))
      continue
    if damaged and quarantine:
      reader.manager.reload()  # forget the renamed steps
    return state, Bookkeeping.from_json(meta), step, iterator, damaged
  if damaged:
    raise ConfigError(f"{reader.directory}: every checkpoint is damaged (steps {sorted(damaged)}); "
                      "they were kept; start a new run.dir or repair them")
  return None


@contextlib.contextmanager
def _quiet_sibling_read_errors() -> Iterator[None]:
  """Drops what a failed restore's abandoned reads print; the failure itself is reported in one line.

  Orbax reads a checkpoint's arrays in concurrent asyncio coroutines over TensorStore.
  When a damaged file fails one of them, the restore stops and closes its event loop
  while sibling reads are still in flight: their completion callbacks then print
  "RuntimeError: Event loop is closed" tracebacks from TensorStore's threads straight
  to the process's stderr, and the abandoned coroutines print "Exception ignored in:
  <coroutine ...>" when they are finalized, usually at exit. So during a restore, file
  descriptor 2 goes to a pipe: replayed unchanged if the restore succeeds, dropped
  (after the stray reads have had a moment to finish) if it fails; and after a failure
  the unraisable-exception hook drops Orbax's coroutines.
  """
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)
  captured: list[bytes] = []
  reader = threading.Thread(target=_read_until_closed, args=(read_end, captured), daemon=True)
  reader.start()
  failed = False
  try:
    yield
  except Exception:
    failed = True
    _drop_abandoned_orbax_reads()
    time.sleep(_STRAY_READS_SECS)
    raise
  finally:
    sys.stderr.flush()
    os.dup2(saved_stderr, 2)  # the pipe's last writer goes: the reader sees its end
    os.close(saved_stderr)
    reader.join(timeout=5)
    os.close(read_end)
    if not failed and captured:
      os.write(2, b"".join(captured))


def _read_until_closed(fd: int, chunks: list[bytes]) -> None:
  while chunk := os.read(fd, 65536):
    chunks.append(chunk)


def _drop_abandoned_orbax_reads() -> None:
  """Drops (from now on) the late reports of Orbax reads that a failed restore abandoned.

  They come when the reads are garbage-collected, often after the restore: as an
  unraisable exception of the coroutine, or as asyncio's "exception was never
  retrieved" log record. Installed once; reports of anything else pass.
  """
  if getattr(sys.unraisablehook, "drops_abandoned_orbax_reads", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable: Any) -> None:
    code = getattr(unraisable.object, "cr_code", None)
    if code is None or not _in_orbax(code.co_filename):
      previous(unraisable)

  hook.drops_abandoned_orbax_reads = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_not_an_abandoned_orbax_read)


def _not_an_abandoned_orbax_read(record: logging.LogRecord) -> bool:
  error = record.exc_info[1] if record.exc_info else None
  frames = traceback.extract_tb(error.__traceback__) if error is not None else []
  return not ("never retrieved" in record.getMessage() and any(_in_orbax(f.filename) for f in frames))


def _in_orbax(filename: str) -> bool:
  return f"{os.sep}orbax{os.sep}" in filename


def _set_aside(path: Path) -> None:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{stamp}")
  path.rename(target)
  log.warning("kept the damaged checkpoint as %s", target)
