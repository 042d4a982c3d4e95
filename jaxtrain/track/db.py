"""The experiment database: runs, their metrics and artifacts, through SQLAlchemy Core.

One code path for SQLite (the default, <run.root>/experiments.db) and any other SQLAlchemy
URL (PostgreSQL: `postgresql+psycopg://user@host/db`). SQLite runs in WAL mode with a busy
timeout, and every transaction is retried with exponential backoff and jitter when the
database is locked or briefly unreachable, so many concurrent runs never lose a row.
Only parameterised statements are issued (SQLAlchemy binds every value).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

log = logging.getLogger("jaxtrain")

DB_FILE = "experiments.db"
URL_ENV = "JAXTRAIN_DB_URL"
STATUSES = ("running", "finished", "failed", "preempted")

metadata = sa.MetaData()
runs_table = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("config", sa.JSON),
    sa.Column("overrides", sa.JSON),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("run_dir", sa.Text),
    sa.Column("summary", sa.JSON),
)
metrics_table = sa.Table(
    "metrics", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("split", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("value", sa.Float),
)
artifacts_table = sa.Table(
    "artifacts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("step", sa.Integer),
)

T = TypeVar("T")


def default_url(root: str | Path) -> str:
  """$JAXTRAIN_DB_URL when set (e.g. a shared PostgreSQL), else sqlite:///<root>/experiments.db."""
  return os.environ.get(URL_ENV) or f"sqlite:///{Path(root) / DB_FILE}"


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[..., None]:
  def on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL sync is durable at every checkpoint of the WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
  return on_connect


class ExperimentDB:
  """A connection to the experiment database: writes for the run hooks, reads for `jaxtrain.runs`."""

  def __init__(self, url: str, timeout_secs: float = 30.0, retries: int = 10, create: bool = True):
    self.url = sa.engine.make_url(url)
    self.retries = retries
    connect_args: dict[str, Any] = {}
    if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
      path = Path(self.url.database)
      if not create and not path.exists():
        from jaxtrain.errors import ConfigError  # here: the module imports nothing of jaxtrain

        raise ConfigError(f"no experiment database at {path}")
      path.parent.mkdir(parents=True, exist_ok=True)
      connect_args["timeout"] = timeout_secs
    self.engine = sa.create_engine(self.url, connect_args=connect_args)
    if self.url.get_backend_name() == "sqlite":
      sa.event.listen(self.engine, "connect", _sqlite_pragmas(int(timeout_secs * 1000)))
    # Several runs may create the tables at once: a loser's "already exists" is retried.
    self._retry(lambda: metadata.create_all(self.engine))

  def _retry(self, fn: Callable[[], T]) -> T:
    """`fn()`, retried on OperationalError ("database is locked", a dropped connection) with
    exponential backoff and full jitter."""
    for attempt in range(self.retries):
      try:
        return fn()
      except OperationalError:
        if attempt == self.retries - 1:
          raise
        time.sleep(random.uniform(0, min(2.0, 0.02 * 2 ** attempt)))
    raise AssertionError("unreachable")

  def _write(self, fn: Callable[[sa.Connection], T]) -> T:
    """`fn(connection)` in one transaction, retried as a whole."""
    def attempt() -> T:
      with self.engine.begin() as connection:
        return fn(connection)
    return self._retry(attempt)

  def _read(self, statement: Any) -> list[dict[str, Any]]:
    def attempt() -> list[dict[str, Any]]:
      with self.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement)]
    return self._retry(attempt)

  # -- writes ---------------------------------------------------------------------------------

  def start_run(self, name: str, config: Any, overrides: list[str], run_dir: str, git_commit: str | None,
                run_id: str | None = None) -> str:
    """Inserts a `running` row and returns its id; with the `run_id` of a row that exists
    (a run resumed in its own directory) that row is marked running again instead."""
    fields = {"name": name, "status": "running", "config": config, "overrides": overrides,
              "git_commit": git_commit, "host": os.uname().nodename, "pid": os.getpid(),
              "run_dir": run_dir, "ended_at": None}

    def write(connection: sa.Connection) -> str:
      if run_id is not None:
        updated = connection.execute(sa.update(runs_table).where(runs_table.c.id == run_id).values(**fields))
        if updated.rowcount:
          return run_id
      new_id = run_id or uuid.uuid4().hex[:12]
      connection.execute(sa.insert(runs_table).values(id=new_id, started_at=_now(), **fields))
      return new_id
    return self._write(write)

  def log_metrics(self, run_id: str, step: int, split: str, values: Mapping[str, float]) -> None:
    """One logged row (all its metrics) in one transaction."""
    self.log_metric_rows(run_id, [(step, split, values)])

  def log_metric_rows(self, run_id: str, logged: Iterable[tuple[int, str, Mapping[str, float]]]) -> None:
    """Several logged rows of (step, split, metrics) in one transaction."""
    rows = [{"run_id": run_id, "step": int(step), "split": split, "name": name, "value": float(value)}
            for step, split, values in logged for name, value in values.items() if value is not None]
    if rows:
      self._write(lambda connection: connection.execute(sa.insert(metrics_table), rows))

  def drop_metrics_after(self, run_id: str, step: int) -> None:
    """Removes the metrics logged after `step` (a resumed run logs those steps again)."""
    self._write(lambda connection: connection.execute(
        sa.delete(metrics_table).where(metrics_table.c.run_id == run_id, metrics_table.c.step > step)))

  def set_artifacts(self, run_id: str, items: Iterable[tuple[str, str, int | None]]) -> None:
    """Replaces the run's artifact list with `items` of (kind, path, step)."""
    rows = [{"run_id": run_id, "kind": kind, "path": path, "step": step} for kind, path, step in items]

    def write(connection: sa.Connection) -> None:
      connection.execute(sa.delete(artifacts_table).where(artifacts_table.c.run_id == run_id))
      if rows:
        connection.execute(sa.insert(artifacts_table), rows)
    self._write(write)

  def end_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
    """Final status (finished | failed | preempted), end time and, when there is one, the summary."""
    if status not in STATUSES:
      raise ValueError(f"unknown run status {status!r}; known: {', '.join(STATUSES)}")
    values: dict[str, Any] = {"status": status, "ended_at": _now()}
    if summary is not None:
      values["summary"] = dict(summary)
    self._write(lambda connection: connection.execute(
        sa.update(runs_table).where(runs_table.c.id == run_id).values(**values)))

  # -- reads ----------------------------------------------------------------------------------

  def list_runs(self, name: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first, optionally only those with this name and/or status."""
    query = sa.select(runs_table).order_by(runs_table.c.started_at.desc())
    if name is not None:
      query = query.where(runs_table.c.name == name)
    if status is not None:
      query = query.where(runs_table.c.status == status)
    return self._read(query)

  def get_run(self, ref: str) -> dict[str, Any]:
    """The run with id `ref`, else the newest run named `ref`; LookupError when there is none."""
    rows = self._read(sa.select(runs_table).where(runs_table.c.id == ref))
    rows = rows or self.list_runs(name=ref)[:1]
    if not rows:
      raise LookupError(f"no run with id or name {ref!r} in {self.describe()}")
    return rows[0]

  def metrics(self, run_id: str) -> list[dict[str, Any]]:
    """The run's metric rows in logging order."""
    query = (sa.select(metrics_table).where(metrics_table.c.run_id == run_id)
             .order_by(metrics_table.c.step, metrics_table.c.id))
    return self._read(query)

  def all_metrics(self) -> list[dict[str, Any]]:
    """Every metric row of every run (for exports)."""
    return self._read(sa.select(metrics_table).order_by(metrics_table.c.run_id, metrics_table.c.id))

  def last_metrics(self, run_id: str) -> dict[str, float]:
    """The last value of each `<split>/<name>` the run logged."""
    return {f"{row['split']}/{row['name']}": row["value"] for row in self.metrics(run_id)}

  def artifacts(self, run_id: str) -> list[dict[str, Any]]:
    return self._read(sa.select(artifacts_table).where(artifacts_table.c.run_id == run_id)
                      .order_by(artifacts_table.c.kind, artifacts_table.c.step))

  def describe(self) -> str:
    """The URL with any password hidden (for messages)."""
    return self.url.render_as_string(hide_password=True)

  def close(self) -> None:
    self.engine.dispose()
