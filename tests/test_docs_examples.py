"""The README's task and encoder examples (trained with the README's own command lines) and the local
launcher work as documented."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _python_blocks(markdown: str) -> list[str]:
  return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def _plugin_command(plugin: str) -> tuple[dict[str, str], list[str]]:
  """The README's command line that trains with `plugin`: its environment variables and its overrides."""
  line = next(l for b in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
              for l in b.splitlines() if l.startswith(f"JAXTRAIN_PLUGINS={plugin} "))
  words = shlex.split(line)
  start = words.index("jaxtrain.main") + 1
  return dict(w.split("=", 1) for w in words[:words.index("python")]), words[start:]


# Appended to the README's commands: a minute of training is not needed to see them work.
_SHORT = ["trainer.steps=60", "trainer.epochs=null", "trainer.eval_every=30", "checkpoint.every=30",
          "logging.progress=none"]


def _events(run_dir: Path) -> list[dict]:
  return [json.loads(l) for l in (run_dir / "facts" / "events.jsonl").read_text().splitlines()]


def test_readme_custom_task_trains_from_the_cli(tmp_path):
  block = next(b for b in _python_blocks((ROOT / "README.md").read_text()) if "register_task" in b)
  package = tmp_path / "mypkg"
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "regression.py").write_text(block)
  variables, overrides = _plugin_command("mypkg.regression")  # the README's command, shortened
  env = dict(os.environ, **variables, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
  run_dir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", "jaxtrain.main", *overrides, *_SHORT, f"run.dir={run_dir}"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  evals = [e["metrics"]["val/mse"] for e in _events(run_dir) if e["event"] == "on_eval"]
  assert len(evals) == 2 and evals[-1] < evals[0], evals
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["final_step"] == 60


def test_local_launcher_splits_the_cpu_into_devices(tmp_path):
  run_dir = tmp_path / "run"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
      ["bash", str(ROOT / "launch" / "local.sh"), "--cpu-devices", "4", "mesh.data=2", "mesh.fsdp=2",
       "trainer.steps=10", "trainer.epochs=null", "logging.progress=none", f"run.dir={run_dir}"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  start = next(e for e in _events(run_dir) if e["event"] == "on_start")
  assert start["devices"] == 4 and start["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}


def test_local_launcher_rejects_a_bad_device_count(tmp_path):
  proc = subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), "--cpu-devices", "many"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.strip().count("\n") == 0 and "--cpu-devices" in proc.stderr


def test_readme_custom_encoder_trains_with_the_builtin_autoencoder(tmp_path):
  block = next(b for b in _python_blocks((ROOT / "README.md").read_text()) if "register_component" in b)
  package = tmp_path / "mypkg"
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "encoders.py").write_text(block)
  variables, overrides = _plugin_command("mypkg.encoders")  # the README's command, shortened
  env = dict(os.environ, **variables, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
  run_dir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", "jaxtrain.main", *overrides, *_SHORT, f"run.dir={run_dir}"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  config = (run_dir / ".hydra" / "config.yaml").read_text()
  assert "name: residual" in config and "width: 64" in config
  evals = [e["metrics"]["val/mse"] for e in _events(run_dir) if e["event"] == "on_eval"]
  assert len(evals) == 2 and evals[-1] < evals[0], evals
