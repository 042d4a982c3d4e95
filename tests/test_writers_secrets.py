"""Secrets are masked in one place for every writer; the metric writers and their fan-out."""

from __future__ import annotations

import json
import sys

import pytest
from omegaconf import OmegaConf

from jaxtrain.errors import ConfigError
from jaxtrain.track import secrets
from jaxtrain.track.events import EventWriter, read_events
from jaxtrain.track.scalars import ScalarWriter
from jaxtrain.track.writers import DBWriter, JsonlWriter, check_writers

SECRET = "tok-91c2d7e4aa"


@pytest.mark.parametrize("name,secret", [
    ("API_KEY", True), ("WANDB_API_KEY", True), ("hf_token", True), ("db.password", True),
    ("aws_secret_access_key", True), ("clientSecret", True), ("PASSWD", True),
    ("max_tokens", False), ("tokenizer", False), ("url", False), ("keyboard", False), ("lr", False)])
def test_secret_names(name, secret):
  assert secrets.is_secret_name(name) is secret


def test_redact_masks_keys_urls_overrides_and_environment_values(monkeypatch):
  monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
  monkeypatch.setenv("HOME_DIRECTORY", "/home/not-a-secret")
  config = {"db": {"url": "postgresql://bob:hunter2@db:5432/runs", "password": "pw", "timeout": 3},
            "logging": {"wandb_api_key": None, "note": f"uses {SECRET} inside"},
            "overrides": ["optim.lr=0.1", "+logging.api_key=abc", "x=https://u:p4ss@host/path"]}
  cleaned = secrets.redact(config)
  assert cleaned["db"] == {"url": "postgresql://bob:***@db:5432/runs", "password": "***", "timeout": 3}
  assert cleaned["logging"] == {"wandb_api_key": None, "note": "uses *** inside"}
  assert cleaned["overrides"] == ["optim.lr=0.1", "+logging.api_key=***", "x=https://u:***@host/path"]
  assert secrets.redact_text("/home/not-a-secret") == "/home/not-a-secret"
  # As Hydra records overrides of a --multirun job, and joins them into override_dirname.
  escaped = r"logging.mlflow_tracking_uri=http\://a\:pw123@h"
  assert secrets.redact_text(escaped) == r"logging.mlflow_tracking_uri=http\://a:***@h"
  assert secrets.redact_text("checkpoint.every=5,db.password=xyz,optim.lr=0.1") == (
      "checkpoint.every=5,db.password=***,optim.lr=0.1")
  assert config["db"]["password"] == "pw"  # a copy: the input is untouched


def test_config_snapshots_and_events_are_redacted(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXTRAIN_TEST_SECRET", SECRET)
  hydra_dir = tmp_path / ".hydra"
  hydra_dir.mkdir()
  (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(["db.url=postgresql://u:hunter2@h/db"]))
  (hydra_dir / "config.yaml").write_text("db:\n  url: null\nlogging:\n  secret_note: abc\n  x: ${oc.env:HOME}\n")
  secrets.redact_yaml_files(hydra_dir)
  assert OmegaConf.load(hydra_dir / "overrides.yaml") == ["db.url=postgresql://u:***@h/db"]
  config = OmegaConf.load(hydra_dir / "config.yaml")
  assert config.logging.secret_note == "***" and config.db.url is None
  assert OmegaConf.to_container(config)["logging"]["x"] == "${oc.env:HOME}"  # interpolations stay as written
  events = EventWriter(tmp_path / "events.jsonl")
  events.write("on_exception", error="RuntimeError", message=f"could not log in with {SECRET}")
  assert SECRET not in (tmp_path / "events.jsonl").read_text()
  assert read_events(tmp_path / "events.jsonl")[0]["message"] == "could not log in with ***"


class _Collect:

  def __init__(self):
    self.rows, self.closed = [], None

  def write(self, step, split, metrics):
    self.rows.append((step, split, dict(metrics)))

  def close(self, status="finished"):
    self.closed = status


def test_scalar_rows_fan_out_to_every_writer(tmp_path):
  sinks = [_Collect(), _Collect()]
  scalars = ScalarWriter(tmp_path / "scalars.csv", ["step", "epoch", "split", "loss", "lr"], sinks=sinks)
  scalars.write({"step": 10, "epoch": 1.0, "split": "train", "loss": 0.5, "lr": None})
  scalars.write({"step": 10, "epoch": 1.0, "split": "val", "loss": 0.4})
  expected = [(10, "train", {"epoch": 1.0, "loss": 0.5}), (10, "val", {"epoch": 1.0, "loss": 0.4})]
  assert sinks[0].rows == expected and sinks[1].rows == expected
  assert len((tmp_path / "scalars.csv").read_text().splitlines()) == 3  # the CSV is still written


def test_jsonl_writer_drops_the_rows_a_resume_logs_again(tmp_path):
  path = tmp_path / "facts" / "metrics.jsonl"
  writer = JsonlWriter(path)
  for step in (10, 20, 30):
    writer.write(step, "train", {"loss": 1.0 / step})
  writer.close()
  JsonlWriter(path, start_step=20).write(30, "train", {"loss": 0.0})
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r["step"], r["metrics"]["loss"]) for r in rows] == [(10, 0.1), (20, 0.05), (30, 0.0)]


def test_unknown_writer_and_missing_package_are_one_line_config_errors(monkeypatch):
  with pytest.raises(ConfigError, match="unknown writer 'tensorbored'; choose from: csv, jsonl"):
    check_writers(OmegaConf.create({"writers": ["csv", "tensorbored"]}))
  monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
  with pytest.raises(ConfigError, match=r"pip install 'jaxtrain\[wandb\]'") as err:
    check_writers(OmegaConf.create({"writers": ["jsonl", "wandb"]}))
  assert "\n" not in str(err.value)


class _BrokenDB:

  def __init__(self):
    self.calls = 0

  def log_metric_rows(self, *args):
    self.calls += 1
    raise RuntimeError("database is locked")

  def describe(self):
    return "sqlite:///x.db"


def test_database_writer_failure_costs_rows_not_the_run(caplog):
  broken = _BrokenDB()
  writer = DBWriter(broken, "run1")
  writer.write(10, "train", {"loss": 1.0})
  writer.flush()
  writer.write(20, "train", {"loss": 1.0})
  writer.close()  # no second attempt, no exception
  assert broken.calls == 1 and "no more metric rows" in caplog.text


class _RecordingDB:

  def __init__(self):
    self.transactions = []

  def log_metric_rows(self, run_id, rows):
    self.transactions.append((run_id, list(rows)))


def test_database_rows_are_written_together_at_a_flush_after_a_while_and_at_close(monkeypatch):
  import jaxtrain.track.writers as writers

  clock = [100.0]
  monkeypatch.setattr(writers.time, "monotonic", lambda: clock[0])
  db = _RecordingDB()
  writer = DBWriter(db, "run1", flush_secs=10.0)
  writer.write(10, "train", {"loss": 1.0})
  writer.write(10, "val", {"loss": 2.0, "api_key": 3.0})
  assert db.transactions == []
  writer.flush()  # a checkpoint: both rows in one transaction, still redacted
  assert db.transactions == [("run1", [(10, "train", {"loss": 1.0}), (10, "val", {"loss": 2.0, "api_key": "***"})])]
  writer.write(20, "train", {"loss": 0.5})
  clock[0] += 9.0
  writer.write(30, "train", {"loss": 0.4})
  assert len(db.transactions) == 1
  clock[0] += 1.0
  writer.write(40, "train", {"loss": 0.3})  # the oldest buffered row is 10 s old
  assert [row[0] for row in db.transactions[1][1]] == [20, 30, 40]
  writer.write(50, "train", {"loss": 0.2})
  writer.close()
  assert [row[0] for row in db.transactions[2][1]] == [50] and len(db.transactions) == 3


def test_missing_writer_package_stops_the_run_before_it_writes(tmp_path, monkeypatch):
  import jaxtrain

  monkeypatch.setitem(sys.modules, "wandb", None)
  cfg = jaxtrain.compose([f"run.dir={tmp_path / 'run'}", f"db.url=sqlite:///{tmp_path / 'e.db'}",
                          "logging.writers=[jsonl,csv,wandb]", "trainer.steps=5", "trainer.epochs=null"])
  with pytest.raises(ConfigError, match=r"'wandb' needs the wandb package"):
    jaxtrain.run(cfg)
  assert not (tmp_path / "run").exists() and not (tmp_path / "e.db").exists()


def test_event_lines_reach_the_file_at_once_except_epoch_ends_which_wait_at_most_flush_secs(tmp_path):
  now = [0.0]
  path = tmp_path / "events.jsonl"
  events = EventWriter(path, flush_secs=1.0, clock=lambda: now[0])
  events.write("on_start", step=0)
  assert [e["event"] for e in read_events(path)] == ["on_start"]
  for step in (5, 10):
    now[0] += 0.3
    events.write("on_epoch_end", step=step, epoch=step // 5, epoch_time_s=0.3)
  assert [e["event"] for e in read_events(path)] == ["on_start"]  # still buffered
  now[0] += 0.5  # 1.1 s since the last flush: this epoch end writes out all three
  events.write("on_epoch_end", step=15, epoch=3, epoch_time_s=0.5)
  assert [e.get("step") for e in read_events(path)] == [0, 5, 10, 15]
  events.write("on_epoch_end", step=20, epoch=4, epoch_time_s=0.1)
  events.write("on_checkpoint", step=20)  # any other event writes out the epoch ends before it
  assert [e.get("step") for e in read_events(path)] == [0, 5, 10, 15, 20, 20]
  events.write("on_epoch_end", step=25, epoch=5, epoch_time_s=0.1)
  events.close()
  assert read_events(path)[-1]["step"] == 25
