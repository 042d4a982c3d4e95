"""Restoring a run from its newest valid checkpoint.

A checkpoint killed mid-save never counts (Orbax only lists committed steps).
A committed one that cannot be read (truncated file, missing item) is reported
in one line and renamed aside, never deleted, and the previous one is used.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

from jaxtrain.actions.base import Bookkeeping
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.errors import ConfigError, IncompatibleCheckpoint

log = logging.getLogger("jaxtrain")

DAMAGED_SUFFIX = ".damaged"


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
  """Orbax reads a checkpoint's arrays in concurrent asyncio tasks. When a damaged file
  fails one of them, the siblings that fail as well are logged by asyncio ("Task
  exception was never retrieved", with a traceback) once they are collected; the first
  failure is already reported in one line, so those logs are dropped."""
  logger = logging.getLogger("asyncio")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  except Exception:
    gc.collect()  # the failed tasks are collected (and would log) now, not later
    raise
  finally:
    logger.setLevel(level)


def _set_aside(path: Path) -> None:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{stamp}")
  path.rename(target)
  log.warning("kept the damaged checkpoint as %s", target)
