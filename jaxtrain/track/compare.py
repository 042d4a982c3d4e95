"""Comparing runs: one row per run, its overrides and metrics, and the best run named.

From Python, on any run directories:

    comparison = compare_runs(["outputs/runs/a", "outputs/runs/b"])
    print(comparison.best_line())
    write_comparison(comparison, "outputs/compare")   # comparison.csv, comparison.md

After `python -m jaxtrain.main --multirun ...`, the Hydra callback
`MultirunComparison` (configs/config.yaml, hydra.callbacks) writes both files
into the sweep directory and prints the best-run line. Only light imports
here: Hydra instantiates the callback on every command line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("jaxtrain")

CSV_FILE = "comparison.csv"
MARKDOWN_FILE = "comparison.md"


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """What the comparison knows of one run."""

  name: str
  overrides: list[str]
  final_metrics: dict[str, float]
  # Best value of the monitored metric over the run's evaluations, and its step.
  best_value: float | None = None
  best_step: int | None = None
  finished: bool = True
  run_dir: Path | None = None


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Runs side by side; `best` by `monitor` and `mode` (None when nothing can be ranked)."""

  runs: list[RunRecord]
  monitor: str | None
  mode: str
  best: RunRecord | None

  def varying_overrides(self, run: RunRecord) -> list[str]:
    """The run's overrides that not every run shares: what the sweep changed."""
    shared = set.intersection(*(set(r.overrides) for r in self.runs)) if self.runs else set()
    return [o for o in run.overrides if o not in shared]

  def best_line(self) -> str:
    """One line naming the best run, or saying why none is named."""
    if not self.monitor:
      return "no best run: checkpoint.monitor is not set"
    if self.best is None:
      return f"no best run: no run has a finite {self.monitor}"
    changed = " ".join(self.varying_overrides(self.best)) or "no overrides"
    return (f"best run by {self.monitor} ({self.mode}): {self.best.name} ({changed}) "
            f"with {self.monitor}={self.best.best_value:.6g} at step {self.best.best_step}")

  def metric_names(self) -> list[str]:
    """Final metrics of all runs, the loss first."""
    names = sorted({k for r in self.runs for k in r.final_metrics})
    return sorted(names, key=lambda k: (not k.endswith("/loss"), k))

  def rows(self) -> list[dict[str, Any]]:
    """One dict per run: name, overrides, best value and step, final metrics, whether it is the best."""
    best_key = f"best {self.monitor}" if self.monitor else "best"
    rows = []
    for run in self.runs:
      row = {"run": run.name, "overrides": " ".join(run.overrides), best_key: run.best_value,
             "best_step": run.best_step, "finished": run.finished, "is_best": run is self.best}
      row.update({name: run.final_metrics.get(name) for name in self.metric_names()})
      rows.append(row)
    return rows


def compare(runs: Sequence[RunRecord], monitor: str | None, mode: str = "min") -> Comparison:
  """Ranks `runs` by their best `monitor` value (`mode` min or max); NaN and missing values never win."""
  if mode not in ("min", "max"):
    raise ValueError(f"mode={mode!r}: choose min or max")
  ranked = [r for r in runs if r.best_value is not None and math.isfinite(r.best_value)]
  best = None
  if monitor and ranked:
    pick = min if mode == "min" else max
    best = pick(ranked, key=lambda r: r.best_value)
  return Comparison(runs=list(runs), monitor=monitor, mode=mode, best=best)


def load_run(run_dir: str | Path, monitor: str | None = None, mode: str | None = None) -> RunRecord:
  """A run's record from its directory: .hydra/overrides.yaml, summary.json and facts/events.jsonl.

  The best value of `monitor` (default: the run's checkpoint.monitor; `mode`
  likewise) is taken over every evaluation the run logged, so any eval metric
  can rank runs.
  """
  run_dir = Path(run_dir)
  overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
  summary_path = run_dir / "summary.json"
  summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
  monitor = monitor or _run_monitor(run_dir)
  mode = mode or _run_mode(run_dir)
  best_value, best_step = _best_from_events(run_dir / "facts" / "events.jsonl", monitor, mode)
  if best_value is None and monitor in summary.get("best_metrics", {}):
    best_value, best_step = summary["best_metrics"][monitor], summary.get("best_step")
  return RunRecord(name=run_dir.name, overrides=[str(o) for o in overrides],
                   final_metrics=dict(summary.get("final_metrics", {})), best_value=best_value,
                   best_step=best_step, finished=bool(summary), run_dir=run_dir)


def record_from_summary(name: str, overrides: Sequence[str], summary: Mapping[str, Any],
                        monitor: str | None) -> RunRecord:
  """A run's record from its in-memory summary (a run that saved no files)."""
  best = summary.get("best_metrics", {})
  return RunRecord(name=name, overrides=list(overrides), final_metrics=dict(summary.get("final_metrics", {})),
                   best_value=best.get(monitor) if monitor else None, best_step=summary.get("best_step"))


def compare_runs(run_dirs: Iterable[str | Path], monitor: str | None = None,
                 mode: str | None = None) -> Comparison:
  """Loads and compares run directories; monitor and mode default to the first run's checkpoint ones."""
  run_dirs = [Path(d) for d in run_dirs]
  first = run_dirs[0] if run_dirs else None
  monitor = monitor or (first and _run_monitor(first))
  mode = mode or (first and _run_mode(first)) or "min"
  return compare([load_run(d, monitor, mode) for d in run_dirs], monitor, mode)


def sweep_run_dirs(sweep_dir: str | Path) -> list[Path]:
  """The job directories of a Hydra sweep, in job order (run_2 before run_10)."""
  found = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
  return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def write_comparison(comparison: Comparison, out_dir: str | Path) -> tuple[Path, Path]:
  """Writes comparison.csv and comparison.md into `out_dir`; returns their paths."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = comparison.rows()
  csv_path, md_path = out_dir / CSV_FILE, out_dir / MARKDOWN_FILE
  with csv_path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run"])
    writer.writeheader()
    writer.writerows([{k: _cell(v) for k, v in row.items()} for row in rows])
  md_path.write_text(_markdown(comparison))
  return csv_path, md_path


def _markdown(comparison: Comparison) -> str:
  shared = sorted(set.intersection(*(set(r.overrides) for r in comparison.runs))) if comparison.runs else []
  best_key = f"best {comparison.monitor}" if comparison.monitor else "best"
  metrics = comparison.metric_names()
  header = ["run", "overrides", best_key, "best step", *(f"final {m}" for m in metrics)]
  lines = ["# Run comparison", "", comparison.best_line(), ""]
  if shared:
    lines += ["Shared by every run: " + " ".join(f"`{o}`" for o in shared), ""]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for run in comparison.runs:
    name = f"**{run.name}** (best)" if run is comparison.best else run.name
    if not run.finished:
      name += " (unfinished)"
    cells = [name, " ".join(f"`{o}`" for o in comparison.varying_overrides(run)) or "-",
             _cell(run.best_value), _cell(run.best_step), *(_cell(run.final_metrics.get(m)) for m in metrics)]
    lines.append("| " + " | ".join(str(c) if c != "" else "-" for c in cells) + " |")
  return "\n".join(lines) + "\n"


def _cell(value: Any) -> Any:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return value


def _read_yaml(path: Path) -> Any:
  return yaml.safe_load(path.read_text()) if path.exists() else None


def _run_checkpoint_config(run_dir: Path) -> dict[str, Any]:
  config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
  return config.get("checkpoint") or {}


def _run_monitor(run_dir: Path) -> str | None:
  return _run_checkpoint_config(run_dir).get("monitor")


def _run_mode(run_dir: Path) -> str:
  return _run_checkpoint_config(run_dir).get("mode") or "min"


def _best_from_events(path: Path, monitor: str | None, mode: str) -> tuple[float | None, int | None]:
  if not monitor or not path.exists():
    return None, None
  best_value, best_step = None, None
  for line in path.read_text().splitlines():
    event = json.loads(line) if line.strip() else {}
    value = (event.get("metrics") or {}).get(monitor) if event.get("event") == "on_eval" else None
    if value is None or not math.isfinite(value):
      continue
    if best_value is None or (value < best_value if mode == "min" else value > best_value):
      best_value, best_step = float(value), event.get("step")
  return best_value, best_step


class MultirunComparison(Callback):
  """Hydra callback: after a --multirun sweep, compares its runs and names the best.

  Writes <sweep_dir>/comparison.csv and comparison.md (unless the runs save
  no artifacts) and prints the best-run line. Jobs that saved nothing
  (logging.save_artifacts=false) are compared from the summaries they return.
  """

  def __init__(self) -> None:
    self._returned: list[RunRecord] = []

  def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
    from hydra.core.utils import JobStatus

    num = OmegaConf.select(job_return.hydra_cfg, "hydra.job.num", default=None)
    if num is None:
      return  # a single run (no sweep): nothing to compare
    if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, Mapping):
      name = f"job_{num}"
      self._returned.append(record_from_summary(name, job_return.overrides or [], job_return.return_value,
                                                config.checkpoint.monitor))

  def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
    monitor, mode = config.checkpoint.monitor, config.checkpoint.mode
    sweep_dir = Path(str(config.hydra.sweep.dir))
    run_dirs = sweep_run_dirs(sweep_dir) if sweep_dir.is_dir() else []
    save = bool(config.logging.save_artifacts and run_dirs)
    runs = [load_run(d, monitor, mode) for d in run_dirs] if save else self._returned
    comparison = compare(runs, monitor, mode)
    if not comparison.runs:
      return
    if save:
      csv_path, _ = write_comparison(comparison, sweep_dir)
      log.info("comparison of %d runs: %s (and %s)", len(comparison.runs), csv_path, MARKDOWN_FILE)
    print(comparison.best_line(), flush=True)
