"""Metric writers: where each logged train/val row goes besides facts/scalars.csv.

`logging.writers` picks them: csv (facts/scalars.csv, always written: the figures and
resumes read it), jsonl (facts/metrics.jsonl), tensorboard (tensorboardX, extra
`tensorboard`), wandb and mlflow (extras of the same names, imported only when chosen;
offline by default). The experiment database (track/db.py) is one more writer. Each has
`write(step, split, metrics)` and `close(status)`; every row passes through
`secrets.redact` before it is written. A writer that buffers rows also has `flush()`, which
writes them at once.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Protocol

from jaxtrain.errors import ConfigError
from jaxtrain.track.secrets import redact, redact_text

log = logging.getLogger("jaxtrain")

METRICS_JSONL = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
WRITERS = ("csv", "jsonl", "tensorboard", "wandb", "mlflow")


class MetricWriter(Protocol):
  """One destination of logged rows."""

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    """Records the metrics of one logged row (a train interval or one evaluation split)."""

  def close(self, status: str = "finished") -> None:
    """Flushes and releases; `status` is finished | failed | preempted."""


def require(module: str, writer: str, extra: str) -> Any:
  """Imports an optional package, or raises one ConfigError line naming the extra to install."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ConfigError(f"logging.writers: {writer!r} needs the {module} package; "
                      f"install it with pip install 'jaxtrain[{extra}]'") from None


class JsonlWriter:
  """facts/metrics.jsonl: {"step", "split", "time", "metrics": {...}} per row, flushed at once."""

  def __init__(self, path: Path, start_step: int = 0):
    self.path = path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
      # Resuming: the steps after the checkpoint are logged again.
      kept = [line for line in path.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= start_step]
      path.write_text("".join(line + "\n" for line in kept))
    self._file: Any = None

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    record = {"step": int(step), "split": split, "time": round(time.time(), 3), "metrics": redact(dict(metrics))}
    if self._file is None or self._file.closed:
      self._file = self.path.open("a")  # kept open: one system call per row
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def close(self, status: str = "finished") -> None:
    del status  # every row is on disk already
    if self._file is not None:
      self._file.close()


class TensorBoardWriter:
  """<run_dir>/tensorboard/: one scalar per metric, tagged <split>/<metric>."""

  def __init__(self, logdir: Path, start_step: int = 0):
    tensorboardX = require("tensorboardX", "tensorboard", "tensorboard")
    # Resumed at start_step: TensorBoard hides the earlier session's events from purge_step on
    # (the steps logged again), and keeps those up to the checkpoint.
    self.writer = tensorboardX.SummaryWriter(logdir=str(logdir), purge_step=start_step + 1 if start_step else None,
                                             flush_secs=30)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    for name, value in metrics.items():
      self.writer.add_scalar(redact_text(f"{split}/{name}"), float(value), global_step=int(step))

  def close(self, status: str = "finished") -> None:
    del status
    self.writer.close()


class WandbWriter:
  """A Weights & Biases run in <run_dir>/wandb; offline unless WANDB_MODE says otherwise."""

  def __init__(self, run_dir: Path, run_name: str, config: Mapping[str, Any], project: str | None,
               entity: str | None):
    wandb = require("wandb", "wandb", "wandb")
    mode = os.environ.get("WANDB_MODE", "offline")
    self.run = wandb.init(project=project or "jaxtrain", entity=entity, name=run_name, dir=str(run_dir),
                          config=redact(dict(config)), mode=mode)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    self.run.log(redact({f"{split}/{name}": float(value) for name, value in metrics.items()}), step=int(step))

  def close(self, status: str = "finished") -> None:
    self.run.finish(exit_code=0 if status == "finished" else 1)


class MlflowWriter:
  """An MLflow run; the tracking URI defaults to <run_dir>/mlflow.db."""

  _STATUS = {"finished": "FINISHED", "failed": "FAILED", "preempted": "KILLED"}

  def __init__(self, run_dir: Path, run_name: str, config: Mapping[str, Any], tracking_uri: str | None,
               experiment: str):
    mlflow = require("mlflow", "mlflow", "mlflow")
    self.entities = importlib.import_module("mlflow.entities")
    # MLflow 3 refuses new file stores (./mlruns); its own replacement is a SQLite file.
    self.client = mlflow.MlflowClient(tracking_uri=tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').absolute()}")
    found = self.client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
    self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
    params = [self.entities.Param(key, str(value)[:500]) for key, value in _flatten(redact(dict(config))).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
      self.client.log_batch(self.run_id, params=params[start:start + 100])

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    now = int(time.time() * 1000)
    batch = [self.entities.Metric(redact_text(f"{split}/{name}"), float(value), now, int(step))
             for name, value in metrics.items()]
    self.client.log_batch(self.run_id, metrics=batch)

  def close(self, status: str = "finished") -> None:
    self.client.set_terminated(self.run_id, status=self._STATUS.get(status, "FAILED"))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
  if not isinstance(tree, Mapping):
    return {prefix: tree}
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat


def check_writers(logging_cfg: Any) -> None:
  """ConfigError for an unknown name in logging.writers or a chosen writer whose package is missing."""
  names = list(logging_cfg.writers)
  unknown = [name for name in names if name not in WRITERS]
  if unknown:
    raise ConfigError(f"logging.writers: unknown writer {unknown[0]!r}; choose from: {', '.join(WRITERS)}")
  for name, module in (("tensorboard", "tensorboardX"), ("wandb", "wandb"), ("mlflow", "mlflow")):
    if name in names:
      require(module, name, name)


def make_writers(logging_cfg: Any, run_dir: Path, run_name: str, config: Mapping[str, Any],
                 start_step: int) -> list[MetricWriter]:
  """The writers `logging_cfg.writers` names (csv is ScalarWriter itself, not one of these)."""
  check_writers(logging_cfg)
  names = list(logging_cfg.writers)
  makers = {
      "jsonl": lambda: JsonlWriter(run_dir / "facts" / METRICS_JSONL, start_step),
      "tensorboard": lambda: TensorBoardWriter(run_dir / TENSORBOARD_DIR, start_step),
      "wandb": lambda: WandbWriter(run_dir, run_name, config, logging_cfg.wandb_project, logging_cfg.wandb_entity),
      "mlflow": lambda: MlflowWriter(run_dir, run_name, config, logging_cfg.mlflow_tracking_uri,
                                     logging_cfg.mlflow_experiment),
  }
  writers: list[MetricWriter] = []
  try:
    for name in dict.fromkeys(names):
      if name in makers:
        writers.append(makers[name]())
  except BaseException:
    for writer in writers:  # e.g. an MLflow server that refuses: the W&B run opened before it ends too
      writer.close("failed")
    raise
  return writers


class DBWriter:
  """Rows into the experiment database. A database that stays unreachable after the retries
  costs the run its database rows (with a warning), not the run.

  Rows are buffered and written together, in one transaction, by `flush()` (called at every
  checkpoint, so a resumed run finds each row up to its checkpoint in the database), once the
  oldest buffered row is `flush_secs` old, and at `close()`. One transaction per row took
  ~0.7 ms of the training thread at every logged row.
  """

  def __init__(self, db: Any, run_id: str, flush_secs: float = 10.0):
    self.db = db
    self.run_id = run_id
    self.flush_secs = flush_secs
    self._rows: list[tuple[int, str, dict[str, Any]]] = []
    self._oldest = 0.0  # time.monotonic() of the first buffered row

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if self.db is None:
      return
    if not self._rows:
      self._oldest = time.monotonic()
    self._rows.append((int(step), split, redact(dict(metrics))))
    if time.monotonic() - self._oldest >= self.flush_secs:
      self.flush()

  def flush(self) -> None:
    """Writes the buffered rows now."""
    rows, self._rows = self._rows, []
    if self.db is None or not rows:
      return
    try:
      self.db.log_metric_rows(self.run_id, rows)
    except Exception as err:  # noqa: BLE001 - training goes on without the database
      log.warning("experiment database %s: %s; no more metric rows go there in this run",
                  self.db.describe(), redact_text(str(err).splitlines()[0]))
      self.db = None

  def close(self, status: str = "finished") -> None:
    del status  # the run row's status is set by RunTracking.end
    self.flush()
