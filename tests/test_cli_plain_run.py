"""A plain `python -m jaxtrain.main` run skips Hydra's mode-probing composition; what it leaves is Hydra's."""

import subprocess
import sys

import pytest
import yaml

from _helpers import cli_env, read_summary, short_overrides

from jaxtrain.main import _is_plain_run


@pytest.mark.parametrize("argv,plain", [
    ([], True),
    (["trainer.steps=5", "optim=sgd"], True),
    (["--multirun", "optim=adam,sgd"], False),
    (["--config-name", "config"], False),
    (["--cfg", "job"], False),
    (["hydra.mode=MULTIRUN"], False),
    (["--help"], False),
])
def test_which_command_lines_take_the_plain_path(argv, plain):
  assert _is_plain_run(argv) is plain


def _records(run_dir):
  """The .hydra records with the run's own directory taken out."""
  return {name: (run_dir / ".hydra" / name).read_text().replace(str(run_dir), "<run_dir>")
          for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}


@pytest.mark.slow
def test_plain_run_leaves_what_hydra_main_leaves(tmp_path):
  """The same job through the plain path and through hydra.main (--config-name forces it): same
  records, log file, summary; the plain path's records say mode RUN, as Hydra's CLI writes."""
  runs = {"plain": [], "hydra_main": ["--config-name", "config"]}
  procs = {}
  for name, flags in runs.items():
    run_dir = tmp_path / name / "run"
    procs[name] = (run_dir, subprocess.Popen([sys.executable, "-m", "jaxtrain.main", *flags,
                                              *short_overrides(run_dir, 5)],
                                             cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
  for name, (run_dir, proc) in procs.items():
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (name, err[-3000:])
  (plain_dir, _), (hydra_dir, _) = procs["plain"], procs["hydra_main"]
  assert _records(plain_dir) == _records(hydra_dir)
  hydra_record = yaml.safe_load((plain_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
  assert hydra_record["mode"] == "RUN" and "hydra.mode=RUN" in hydra_record["overrides"]["hydra"]
  assert hydra_record["job"]["name"] == "main" and (plain_dir / "main.log").is_file()
  assert read_summary(plain_dir)["params_fingerprint"] == read_summary(hydra_dir)["params_fingerprint"]
