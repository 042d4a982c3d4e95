"""A run's records beyond the facts files: its experiment-database row and its metric writers.

Lifecycle: `RunTracking(...)` at start (a `running` row; a run resumed in its own
directory finds its id in facts/run_id and updates that row), `open_writers(start_step)`
once the restored step is known (the rows after it are dropped, they are logged again),
`end(status, summary)` on the way out (finished | failed | preempted, the artifacts on
disk). Only process 0 records; on the others every method does nothing.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from jaxtrain.errors import ConfigError
from jaxtrain.track import rundir
from jaxtrain.track.secrets import redact, redact_text
from jaxtrain.track.writers import DBWriter, MetricWriter, check_writers, make_writers

log = logging.getLogger("jaxtrain")

RUN_ID_FILE = "run_id"
_FIGURE_STEP = re.compile(r"-(\d+)\.\w+$")


def git_commit() -> str | None:
  """HEAD of the git checkout the run starts in, if there is one."""
  try:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
  except (OSError, subprocess.SubprocessError):
    return None
  if done.returncode != 0:
    return None
  return done.stdout.strip() or None


def config_record(raw: Any) -> dict[str, Any]:
  """The run's config as JSON-ready data with secrets masked (resolved where it resolves)."""
  try:
    data = OmegaConf.to_container(raw, resolve=True)
  except Exception:  # noqa: BLE001 - an interpolation only the CLI can resolve: keep it as written
    data = OmegaConf.to_container(raw, resolve=False)
  return redact(data)


def artifacts_on_disk(run_dir: Path) -> list[tuple[str, str, int | None]]:
  """(kind, path, step) of the checkpoints, figures and TensorBoard logs the run directory holds."""
  found: list[tuple[str, str, int | None]] = []
  checkpoints = run_dir / rundir.CHECKPOINTS_DIR
  if checkpoints.is_dir():
    found += [("checkpoint", str(p), int(p.name)) for p in sorted(checkpoints.iterdir()) if p.name.isdigit()]
  figures = run_dir / "figures"
  if figures.is_dir():
    for path in sorted(figures.iterdir()):
      match = _FIGURE_STEP.search(path.name)
      found.append(("figure", str(path), int(match.group(1)) if match else None))
  if (run_dir / "tensorboard").is_dir():
    found.append(("tensorboard", str(run_dir / "tensorboard"), None))
  return found


class RunTracking:
  """The database row and metric writers of one run (see the module docstring)."""

  def __init__(self, spec: Any, run_dir: Path, overrides: list[str], enabled: bool):
    cfg = spec.config
    self.cfg = cfg
    self.run_dir = run_dir
    self.enabled = enabled
    self.config = config_record(spec.raw)
    self.writers: list[MetricWriter] = []
    self.db: Any = None
    self.run_id: str | None = None
    self.started = time.time()
    check_writers(cfg.logging)  # a missing package fails now, before anything is built
    if enabled and cfg.db.enabled:
      self._open_db(overrides)

  def _open_db(self, overrides: list[str]) -> None:
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from jaxtrain.track.db import ExperimentDB, default_url

    url = self.cfg.db.url or default_url(self.cfg.run.root)
    id_file = self.run_dir / rundir.FACTS_DIR / RUN_ID_FILE
    known_id = id_file.read_text().strip() if id_file.exists() else None
    try:
      self.db = ExperimentDB(url, timeout_secs=self.cfg.db.timeout_secs)
      self.run_id = self.db.start_run(self.cfg.run.name, self.config, [redact_text(o) for o in overrides],
                                      str(self.run_dir.absolute()), git_commit(), run_id=known_id)
    except ArgumentError as err:
      raise ConfigError(f"db.url: {redact_text(str(err))}") from None
    except ModuleNotFoundError as err:
      raise ConfigError(f"db.url: the database driver is not installed ({err})") from None
    except OSError as err:  # e.g. the SQLite file's folder cannot be created
      raise ConfigError(f"db.url: {redact_text(str(err))}") from None
    except SQLAlchemyError as err:
      # The run itself matters more than its database row.
      log.warning("experiment database unreachable (%s); this run is not recorded there",
                  redact_text(str(err).splitlines()[0]))
      self.db = None
      return
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(self.run_id + "\n")

  def open_writers(self, start_step: int) -> list[MetricWriter]:
    """The writers for logged rows, from `start_step` on (process 0; none elsewhere)."""
    if not self.enabled:
      return []
    if self.db is not None:
      self.db.drop_metrics_after(self.run_id, start_step)
      self.writers.append(DBWriter(self.db, self.run_id))
    self.writers += make_writers(self.cfg.logging, self.run_dir, self.cfg.run.name, self.config, start_step)
    return self.writers

  def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
    """Closes the writers and records the final status, the summary and the artifacts."""
    for writer in self.writers:
      try:
        writer.close(status)
      except Exception as err:  # noqa: BLE001 - one writer failing must not hide the run's own ending
        log.warning("closing the %s writer failed: %s", type(writer).__name__, err)
    self.writers = []
    if self.db is None:
      return
    if summary is None:
      summary = self._summary_written_by_this_session()
    try:
      self.db.set_artifacts(self.run_id, artifacts_on_disk(self.run_dir))
      self.db.end_run(self.run_id, status, redact(dict(summary)) if summary is not None else None)
    except Exception as err:  # noqa: BLE001
      log.warning("experiment database: the end of run %s was not recorded: %s", self.run_id,
                  redact_text(str(err).splitlines()[0]))
    finally:
      self.db.close()
      self.db = None

  def _summary_written_by_this_session(self) -> dict[str, Any] | None:
    """summary.json when this session wrote it (a diverged run writes one, then fails)."""
    import json

    path = self.run_dir / rundir.SUMMARY_FILE
    if path.exists() and path.stat().st_mtime >= self.started:
      return json.loads(path.read_text())
    return None
