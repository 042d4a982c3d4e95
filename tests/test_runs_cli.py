"""One short real run recorded end to end: the database row, the metric writers, no secret anywhere,
and `python -m jaxtrain.runs` (in-process) on the result."""

from __future__ import annotations

import csv
import json
import os
import struct
import types
from pathlib import Path

import pytest

import jaxtrain
from jaxtrain import runs
from jaxtrain.track.db import ExperimentDB

from _helpers import short_overrides

ENV_SECRET = "env-secret-7f3a9c2e51"  # in a secret-looking environment variable
URL_PASSWORD = "url-pw-b84d02e6"  # the password of a URL given as an override


def read_tensorboard_scalars(logdir: Path) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} from the TFRecord event files tensorboardX wrote."""
  from tensorboardX.proto import event_pb2

  scalars: dict[str, dict[int, float]] = {}
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])  # after length and its crc
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  """A 20-step run into its own database, with jsonl + tensorboard writers and two secrets,
  then resumed in the same directory up to step 30."""
  root = tmp_path_factory.mktemp("recorded")
  db_url = f"sqlite:///{root / 'experiments.db'}"
  os.environ["JAXTRAIN_TEST_API_KEY"] = ENV_SECRET
  try:
    sessions = []
    for steps in (20, 30):
      overrides = short_overrides(root / "run", steps, "trainer.eval_every=10", "checkpoint.every=10",
                                  "run.name=recorded", f"db.url={db_url}", "logging.writers=[jsonl,csv,tensorboard]",
                                  f"logging.mlflow_tracking_uri=http://alice:{URL_PASSWORD}@localhost:5000",
                                  "logging.wandb_entity=${oc.env:JAXTRAIN_TEST_API_KEY}")
      sessions.append(jaxtrain.run(jaxtrain.compose(overrides)))
  finally:
    del os.environ["JAXTRAIN_TEST_API_KEY"]
  db = ExperimentDB(db_url, create=False)
  yield types.SimpleNamespace(root=root, run_dir=root / "run", db_url=db_url, db=db, result=sessions[-1],
                              row=db.get_run("recorded"))
  db.close()


def test_run_lands_in_the_database(recorded):
  row, db = recorded.row, recorded.db
  assert row["status"] == "finished" and row["name"] == "recorded" and row["ended_at"] is not None
  # The resumed session updated the first session's row.
  assert [r["id"] for r in db.list_runs()] == [row["id"]] and row["summary"]["final_step"] == 30
  assert (recorded.run_dir / "facts" / "run_id").read_text().strip() == row["id"]
  assert row["summary"]["final_metrics"] == recorded.result.summary["final_metrics"]
  assert row["summary"]["params_fingerprint"] == recorded.result.params_fingerprint
  assert row["config"]["optim"]["lr"] == 1e-3 and row["run_dir"] == str(recorded.run_dir.absolute())
  metrics = db.metrics(row["id"])
  logged = [(m["split"], m["step"]) for m in metrics if m["name"] == "loss"]
  assert sorted(logged) == [(split, step) for split in ("train", "val") for step in (10, 20, 30)]  # no duplicates
  assert db.last_metrics(row["id"])["val/loss"] == pytest.approx(recorded.result.summary["final_metrics"]["val/loss"])
  kinds = {(a["kind"], a["step"]) for a in db.artifacts(row["id"])}
  assert ("checkpoint", 30) in kinds and ("tensorboard", None) in kinds


def test_writers_produce_readable_files(recorded):
  lines = [json.loads(line) for line in (recorded.run_dir / "facts" / "metrics.jsonl").read_text().splitlines()]
  expected = [(step, split) for step in (10, 20, 30) for split in ("train", "val")]
  assert sorted((r["step"], r["split"]) for r in lines) == expected
  tensorboard = read_tensorboard_scalars(recorded.run_dir / "tensorboard")
  assert set(tensorboard["train/loss"]) == {10, 20, 30}
  assert tensorboard["val/loss"][30] == pytest.approx(recorded.result.summary["final_metrics"]["val/loss"], rel=1e-6)


def test_no_secret_in_any_file_or_the_database(recorded):
  files = [p for p in recorded.root.rglob("*") if p.is_file()]  # the run dir and the database (+ its WAL)
  assert any(p.name.startswith("experiments.db") for p in files) and any(p.parent.name == ".hydra" for p in files)
  for path in files:
    data = path.read_bytes()
    assert ENV_SECRET.encode() not in data and URL_PASSWORD.encode() not in data, path
  logging_cfg = recorded.row["config"]["logging"]
  assert logging_cfg["mlflow_tracking_uri"] == "http://alice:***@localhost:5000"
  assert logging_cfg["wandb_entity"] == "***"
  assert "logging.mlflow_tracking_uri=http://alice:***@localhost:5000" in recorded.row["overrides"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
  code = runs.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_list_show_best_export(recorded, capsys, tmp_path):
  run_id = recorded.row["id"]
  code, out, _ = _cli(capsys, "--db", recorded.db_url, "list", "--status", "finished", "--where", "optim.lr=0.001")
  assert code == 0 and run_id in out and "recorded" in out
  code, out, _ = _cli(capsys, "--db", recorded.db_url, "list", "--where", "optim.lr=0.5")
  assert code == 0 and run_id not in out
  code, out, _ = _cli(capsys, "--db", recorded.db_url, "show", "recorded")
  assert code == 0 and run_id in out and "optim.lr" in out and "params_fingerprint" in out and "val/loss" in out
  code, out, _ = _cli(capsys, "--db", recorded.db_url, "best", "--metric", "val/loss", "--mode", "min")
  assert code == 0 and run_id in out
  code, out, _ = _cli(capsys, "--db", recorded.db_url, "export", "--csv", str(tmp_path / "runs.csv"))
  rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
  assert code == 0 and [r["id"] for r in rows] == [run_id] and float(rows[0]["val/loss"]) > 0
  code, out, _ = _cli(capsys, "--db", recorded.db_url, "export", "--csv", str(tmp_path / "m.csv"), "--table",
                      "metrics")
  rows = list(csv.DictReader((tmp_path / "m.csv").open()))
  assert code == 0 and len(rows) == len(recorded.db.metrics(run_id)) and rows[0]["run_name"] == "recorded"


def test_compare_shows_only_differing_keys(tmp_path, capsys):
  url = f"sqlite:///{tmp_path / 'e.db'}"
  db = ExperimentDB(url)
  base = {"optim": {"name": "adamw", "lr": 0.001}, "trainer": {"seed": 0}, "run": {"dir": "/a"}}
  first = db.start_run("a", base, [], "/a", None)
  second = db.start_run("b", {**base, "optim": {"name": "adamw", "lr": 0.01}, "run": {"dir": "/b"}}, [], "/b", None)
  for run_id, loss in ((first, 0.5), (second, 0.25)):
    db.log_metrics(run_id, 10, "val", {"loss": loss})
    db.end_run(run_id, "finished", {"final_metrics": {"val/loss": loss}})
  code, out, _ = _cli(capsys, "--db", url, "compare", "a", second)
  assert code == 0 and "1 differing config keys" in out
  assert "optim.lr" in out and "0.01" in out and "val/loss" in out
  assert "optim.name" not in out and "trainer.seed" not in out and "run.dir" not in out
  code, out, _ = _cli(capsys, "--db", url, "best", "--metric", "val/loss", "--mode", "max")
  assert code == 0 and first in out


def test_unknown_run_and_missing_database_are_one_line_errors(tmp_path, capsys):
  code, out, err = _cli(capsys, "--db", f"sqlite:///{tmp_path / 'none.db'}", "list")
  assert code == 2 and err.strip().count("\n") == 0 and "no experiment database" in err
  assert not (tmp_path / "none.db").exists()
  ExperimentDB(f"sqlite:///{tmp_path / 'e.db'}").close()
  code, out, err = _cli(capsys, "--db", f"sqlite:///{tmp_path / 'e.db'}", "show", "nope")
  assert code == 2 and err.strip().count("\n") == 0 and "'nope'" in err
