"""The notebooks run top to bottom in a real Jupyter kernel (nbclient + ipykernel, as in Colab: magics,
inline figures, widgets), with parameters that keep them to tens of steps; their outputs are checked.
The committed files carry no outputs."""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
QUICKSTART_STEPS = 40


def _parameters(name: str, tmp_path: Path) -> dict[str, str]:
  """Each notebook's parameter cell reads these environment variables: tiny runs, all under tmp_path."""
  return {
      "quickstart.ipynb": {"QUICKSTART_STEPS": str(QUICKSTART_STEPS), "QUICKSTART_RUN_DIR": str(tmp_path / "run")},
      "custom_task.ipynb": {"CUSTOM_TASK_STEPS": "40", "CUSTOM_TASK_TRIALS": "3",
                            "CUSTOM_TASK_ROOT": str(tmp_path / "custom")},
  }[name]


@pytest.fixture(scope="module")
def kernel_spec(tmp_path_factory):
  """A `python3` kernel spec for this very interpreter, found first through JUPYTER_PATH, so the
  notebooks never run in whatever other Python a user-wide kernel spec names."""
  from ipykernel.kernelspec import write_kernel_spec

  jupyter_dir = tmp_path_factory.mktemp("jupyter")
  write_kernel_spec(str(jupyter_dir / "kernels" / "python3"))
  return jupyter_dir


def execute(path: Path, cwd: Path, parameters: dict[str, str]) -> nbformat.NotebookNode:
  """Runs every cell in a fresh kernel started in `cwd` with this process's environment plus
  `parameters`; a cell that raises fails here, naming it."""
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": str(cwd)}}).execute(env={**os.environ, **parameters})
  return notebook


def cell(notebook, cell_id: str):
  return next(c for c in notebook.cells if c.get("id") == cell_id)


def text(notebook, cell_id: str) -> str:
  """What the cell printed (streams and the plain text of displays), without colour codes."""
  parts = []
  for output in cell(notebook, cell_id).outputs:
    parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
  return ANSI.sub("", "".join(parts))


def images(notebook, cell_id: str) -> int:
  return sum("image/png" in output.get("data", {}) for output in cell(notebook, cell_id).outputs)


def widget_texts(notebook, cell_id: str) -> list[str]:
  """The final contents of each output widget the cell displayed (rich's progress bar draws into one)."""
  states = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
  texts = []
  for output in cell(notebook, cell_id).outputs:
    view = output.get("data", {}).get(WIDGET_VIEW)
    if view:
      shown = states[view["model_id"]]["state"].get("outputs", [])
      texts.append(ANSI.sub("", "".join(o.get("data", {}).get("text/plain", "") for o in shown)))
  return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name}: strip the outputs"
  assert "widgets" not in notebook.metadata, f"{path.name}: strip the widget state"
  # Colab: the first cell installs jaxtrain only when it is missing; then one tagged parameters cell.
  assert "import jaxtrain" in code[0].source and "%pip install" in code[0].source
  assert [c.get("id") for c in code if "parameters" in c.metadata.get("tags", [])] == ["parameters"]


def check_quickstart(notebook, tmp_path):
  steps, more = QUICKSTART_STEPS, QUICKSTART_STEPS // 2
  run_dir = tmp_path / "run"
  assert cell(notebook, "install").outputs == []  # jaxtrain was importable: nothing installed
  hardware = text(notebook, "hardware")
  assert "8 cpu device(s)" in hardware  # the test process's 8 fake CPU devices
  assert "trainer.precision=fp32" in hardware and "mesh.data=8" in hardware

  train = text(notebook, "train")
  assert f"trained {steps} steps to step {steps}" in train
  assert f"finished at step {steps} (all steps done)" in train  # jaxtrain's log lines reach the notebook
  [bar] = widget_texts(notebook, "train")
  assert f"{steps}/{steps}" in bar and "train" in bar  # the bar's final state, not its last timed redraw
  assert images(notebook, "figures") == 2  # loss curves and reconstructions

  resume = text(notebook, "resume")
  assert f"resumed from {run_dir / 'checkpoints'} at step {steps}" in resume
  assert f"resumed at step {steps}: trained {more} more steps to step {steps + more}" in resume
  [bar] = widget_texts(notebook, "resume")
  assert f"{steps + more}/{steps + more}" in bar
  assert images(notebook, "resume") == 1
  summary = json.loads((run_dir / "summary.json").read_text())
  assert (summary["final_step"], summary["steps_this_session"]) == (steps + more, more)

  match = re.search(r"best checkpoint: step (\d+) \(logged as best: step (\d+)\); "
                    r"val/loss logged (\S+), evaluated again (\S+)", text(notebook, "evaluate"))
  assert match, text(notebook, "evaluate")
  step, best_step, logged, evaluated = int(match[1]), int(match[2]), float(match[3]), float(match[4])
  assert step == best_step == summary["best_step"]
  assert evaluated == logged == summary["best_metrics"]["val/loss"]
  record = json.loads((run_dir / "evaluations" / f"step_{step}.json").read_text())
  assert record["metrics"]["val/loss"] == evaluated


def check_custom_task(notebook, tmp_path):
  from jaxtrain.runs import final_metrics
  from jaxtrain.track.db import ExperimentDB

  root = tmp_path / "custom"
  assert cell(notebook, "install").outputs == []
  assert "inpaint" in text(notebook, "task").split("registered tasks:")[1]
  assert "finished at step 40 (all steps done)" in text(notebook, "train")
  assert images(notebook, "show") == 1

  trials = json.loads((root / "sweep" / "trials.json").read_text())["trials"]
  assert len(trials) == 3 and {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
  assert all(set(t["params"]) == {"optim.lr", "task.width"} for t in trials)
  assert "best overrides: optim.lr=" in text(notebook, "sweep")
  assert images(notebook, "sweep") == 1  # the optimization history

  compare = text(notebook, "compare")
  assert "4 finished runs" in compare  # the first run and every trial
  assert images(notebook, "compare") == 1  # figures still show inline after the sweep's report
  match = re.search(r"best run: (\w+) \(.*\) val/loss=(\S+)", compare)
  assert match, compare
  db = ExperimentDB(f"sqlite:///{root / 'experiments.db'}", create=False)
  try:
    runs = db.list_runs(status="finished")
    best = min(runs, key=lambda run: final_metrics(db, run)["val/loss"])
    assert (match[1], float(match[2])) == (best["id"], final_metrics(db, best)["val/loss"])
    assert {run["run_dir"] for run in runs} >= {t["run_dir"] for t in trials}
  finally:
    db.close()


CHECKS = {"quickstart.ipynb": check_quickstart, "custom_task.ipynb": check_custom_task}


def test_every_notebook_is_checked():
  assert {p.name for p in NOTEBOOKS} == set(CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, kernel_spec, monkeypatch):
  monkeypatch.setenv("JUPYTER_PATH", str(kernel_spec))
  monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend must draw the figures
  notebook = execute(path, tmp_path, _parameters(path.name, tmp_path))
  CHECKS[path.name](notebook, tmp_path)
