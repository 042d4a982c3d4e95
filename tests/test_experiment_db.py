"""The experiment database under load and across a resume: concurrent writers lose no rows,
a resumed run keeps its row."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from jaxtrain.errors import ConfigError
from jaxtrain.track import db as db_lib
from jaxtrain.track.db import ExperimentDB

WRITERS, ROWS = 8, 500

# Loads track/db.py on its own (no jax import: a worker starts in a fraction of a second) and
# writes ROWS metric rows, one transaction each, as a run's logger does.
WORKER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("experiment_db", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    db = module.ExperimentDB(sys.argv[2])
    run_id = db.start_run("worker-" + sys.argv[3], {"worker": int(sys.argv[3])}, [], "/nowhere", None)
    for step in range(int(sys.argv[4])):
        db.log_metrics(run_id, step, "train", {"loss": float(step)})
    db.end_run(run_id, "finished")
""")


def test_concurrent_writers_lose_no_rows(tmp_path):
  url = f"sqlite:///{tmp_path / 'experiments.db'}"
  workers = [subprocess.Popen([sys.executable, "-c", WORKER, db_lib.__file__, url, str(i), str(ROWS)],
                              stderr=subprocess.PIPE, text=True) for i in range(WRITERS)]
  for worker in workers:
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err[-2000:]
  db = ExperimentDB(url, create=False)
  runs = db.list_runs(status="finished")
  assert len(runs) == WRITERS
  assert len(db.all_metrics()) == WRITERS * ROWS
  for run in runs:
    assert [m["step"] for m in db.metrics(run["id"])] == list(range(ROWS))
  # WAL mode was really switched on (it is a property of the database file).
  with db.engine.connect() as connection:
    assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
  db.close()


def test_resumed_run_updates_its_own_row(tmp_path):
  db = ExperimentDB(f"sqlite:///{tmp_path / 'e.db'}")
  run_id = db.start_run("r", {"a": 1}, ["a=1"], "/run", "abc123")
  for step in (10, 20, 30):
    db.log_metrics(run_id, step, "train", {"loss": 1.0 / step, "lr": 0.1})
  db.end_run(run_id, "preempted")
  # Resumed from the checkpoint at step 20: same row, running again, the later rows dropped.
  assert db.start_run("r", {"a": 1}, ["a=1"], "/run", "abc123", run_id=run_id) == run_id
  db.drop_metrics_after(run_id, 20)
  assert [r["id"] for r in db.list_runs()] == [run_id] and db.get_run(run_id)["status"] == "running"
  assert sorted({m["step"] for m in db.metrics(run_id)}) == [10, 20]
  db.end_run(run_id, "finished", {"final_step": 30})
  row = db.get_run("r")
  assert row["status"] == "finished" and row["summary"] == {"final_step": 30} and row["git_commit"] == "abc123"
  # An id the database does not know (another database) starts a row with that id.
  assert db.start_run("r", {}, [], "/run", None, run_id="elsewhere01") == "elsewhere01"
  with pytest.raises(ValueError, match="unknown run status"):
    db.end_run(run_id, "exploded")
  db.close()


def test_missing_database_is_not_created_for_reading(tmp_path):
  with pytest.raises(ConfigError, match="no experiment database at"):
    ExperimentDB(f"sqlite:///{tmp_path / 'absent.db'}", create=False)
  assert not (tmp_path / "absent.db").exists()


def test_default_url_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.delenv(db_lib.URL_ENV, raising=False)
  assert db_lib.default_url(tmp_path) == f"sqlite:///{tmp_path / 'experiments.db'}"
  monkeypatch.setenv(db_lib.URL_ENV, "postgresql://runs@db.example/experiments")
  assert db_lib.default_url(tmp_path) == "postgresql://runs@db.example/experiments"


def test_a_run_that_fails_is_recorded_as_failed(tmp_path):
  """A config error found after the build (an unknown monitored metric) ends the row as failed."""
  import jaxtrain

  url = f"sqlite:///{tmp_path / 'e.db'}"
  cfg = jaxtrain.compose([f"run.dir={tmp_path / 'run'}", "run.name=doomed", f"db.url={url}", "trainer.steps=5",
                          "trainer.epochs=null", "logging.progress=none", "checkpoint.monitor=val/nonsense"])
  with pytest.raises(ConfigError, match="checkpoint.monitor"):
    jaxtrain.run(cfg)
  db = ExperimentDB(url, create=False)
  row = db.get_run("doomed")
  assert row["status"] == "failed" and row["ended_at"] is not None and row["summary"] is None
  assert (tmp_path / "run" / "facts" / "run_id").read_text().strip() == row["id"]
  db.close()
