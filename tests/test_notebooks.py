"""The notebooks run top to bottom (their code cells, in order, in a fresh interpreter)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def notebook_source(path: Path) -> str:
  """The code cells as one script; shell/magic lines (`!pip`, `%matplotlib`) are skipped."""
  cells = json.loads(path.read_text())["cells"]
  lines = []
  for cell in cells:
    if cell["cell_type"] == "code":
      assert not cell.get("outputs"), f"{path.name}: outputs must be stripped before commit"
      lines += [l for l in "".join(cell["source"]).splitlines() if not l.lstrip().startswith(("!", "%"))]
  return "\n".join(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
  script = tmp_path / "notebook.py"
  script.write_text(notebook_source(path))
  env = dict(os.environ, MPLBACKEND="Agg", QUICKSTART_STEPS="60", QUICKSTART_RUN_DIR=str(tmp_path / "run"))
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  if path.name == "quickstart.ipynb":
    assert "trained this time: 60 steps; final step 120" in proc.stdout
