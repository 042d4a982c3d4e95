"""The end of a sweep: a table of trials, the best config as overrides, and Optuna's figures."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.table import Table

from jaxtrain.sweeps import space
from jaxtrain.sweeps.study import trial_rows

log = logging.getLogger("jaxtrain")


def best_overrides(study: optuna.Study) -> str | None:
  """The best trial's params as one override line (`optim.lr=... optim.weight_decay=...`), or None."""
  try:
    best = study.best_trial
  except ValueError:  # no complete trial
    return None
  return " ".join(space.as_overrides(best.params))


def print_table(study: optuna.Study, metric: str, console: Console | None = None) -> None:
  """Every trial: number, state, params, value (and the trial a retry continued)."""
  rows = trial_rows(study)
  names = sorted({name for row in rows for name in row["params"]})
  table = Table(title=f"study {study.study_name}: {metric} ({study.direction.name.lower()})")
  for column in ("trial", "state", *names, metric):
    table.add_column(column, justify="right" if column not in ("state",) else "left")
  for row in rows:
    label = str(row["number"]) + (f" (retry of {row['retry_of']})" if row["retry_of"] is not None else "")
    params = [_short(row["params"].get(name)) for name in names]
    table.add_row(label, row["state"].lower(), *params, _short(row["value"]))
  (console or Console()).print(table)


def write_results(study: optuna.Study, sweep_dir: Path) -> Path:
  """trials.json (the table's rows and the best overrides) in the sweep directory."""
  path = sweep_dir / "trials.json"
  path.write_text(json.dumps({"study": study.study_name, "best_overrides": best_overrides(study),
                              "trials": trial_rows(study)}, indent=2, default=str))
  return path


def write_figures(study: optuna.Study, sweep_dir: Path) -> list[Path]:
  """optimization_history.png and param_importances.png (fANOVA; needs 2+ complete trials)."""
  import matplotlib

  # Files, never windows: Agg. A Jupyter kernel's inline backend opens no window either, and
  # switching away from it would keep every later figure of the notebook from showing.
  if "inline" not in (matplotlib.get_backend(auto_select=False) or ""):
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from optuna.visualization import matplotlib as optuna_plots

  figures = {"optimization_history": optuna_plots.plot_optimization_history,
             "param_importances": optuna_plots.plot_param_importances}
  written = []
  for name, plot in figures.items():
    # Optuna's plots switch matplotlib's global style to ggplot; the context puts it back.
    with matplotlib.rc_context():
      try:
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
          axes = plot(study)
      except (ValueError, RuntimeError) as err:  # too few complete trials, or no spread to explain
        log.info("sweep: no %s figure (%s)", name, str(err).splitlines()[0] if str(err) else type(err).__name__)
        continue
      figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
      path = sweep_dir / f"{name}.png"
      figure.savefig(path, dpi=100, bbox_inches="tight")
      plt.close(figure)
    written.append(path)
  return written


def _short(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)
