"""Bad overrides => exit 2, one `jaxtrain: error:` line naming the key (and choices), nothing created."""

import subprocess
import sys

import pytest
import yaml

from _helpers import cli_env, read_summary, run_cli

CASES = {
    "unknown_group_option": (["optim=foo"], ["optim=foo", "adam, adamw, lion, sgd"]),
    "unknown_key": (["trainer.foo=1"], ["trainer.foo", "unknown key", "steps", "eval_every"]),
    "wrong_type": (["trainer.steps=abc"], ["trainer.steps", "abc", "Integer"]),
    "bad_task_key": (["task.nope=1"], ["task.nope", "unknown key", "reconstruction"]),
    "bad_value": (["checkpoint.mode=mid"], ["checkpoint.mode", "mid", "min, max"]),
    "bad_multirun_job": (["--multirun", "optim=adam,foo"], ["optim=foo", "adam, adamw, lion, sgd"]),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
  """Every case at once (each in its own empty cwd): the interpreter start-up dominates."""
  procs = {}
  for name, (args, _) in CASES.items():
    cwd = tmp_path_factory.mktemp(name)
    procs[name] = (cwd, subprocess.Popen([sys.executable, "-m", "jaxtrain.main", *args], cwd=cwd, env=cli_env(),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = {}
  for name, (cwd, proc) in procs.items():
    out, err = proc.communicate(timeout=240)
    results[name] = (cwd, proc.returncode, out, err)
  return results


@pytest.mark.parametrize("case", list(CASES))
def test_bad_override_is_one_line_exit_2(cli_results, case):
  cwd, returncode, out, err = cli_results[case]
  expected_fragments = CASES[case][1]
  assert returncode == 2, (out, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith("jaxtrain: error: ")
  for fragment in expected_fragments:
    assert fragment in lines[0], (fragment, lines[0])
  assert "Traceback" not in err + out
  assert list(cwd.iterdir()) == []  # no outputs/, no .hydra, nothing


@pytest.mark.parametrize("overrides,fragments", [
    (["foo=1"], ["foo"]),
    (["+foo=1"], ["foo", "unknown top-level key"]),
    (["schedule=bogus"], ["schedule=bogus", "constant", "warmup_cosine"]),
    (["logging.progress=fancy"], ["logging.progress", "fancy", "auto, bar, plain, none"]),
    (["mesh.params=sideways"], ["mesh.params", "replicate, fsdp, auto"]),
    (["trainer.steps=-3"], ["trainer.steps", "positive"]),
    (["trainer.steps=null", "trainer.epochs=null"], ["trainer.steps", "trainer.epochs"]),
    (["task=nope"], ["task=nope", "ae"]),
    (["optim.lr=abc"], ["optim.lr", "abc"]),
])
def test_bad_overrides_in_python_name_the_key(overrides, fragments):
  """The same checks from Python: one-line ConfigError, raised before anything is built."""
  import jaxtrain
  from jaxtrain.errors import ConfigError

  with pytest.raises(ConfigError) as info:
    jaxtrain.compose(overrides)
  message = str(info.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


@pytest.mark.slow
def test_multirun_makes_one_run_dir_per_job(tmp_path):
  proc = run_cli(["--multirun", "optim=adam,sgd", "trainer.steps=5", "trainer.epochs=null", "trainer.log_every=5",
                  "trainer.eval_every=5", "checkpoint.every=5", "logging.progress=none", "run.name=sweep"],
                 cwd=tmp_path, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  sweeps = list((tmp_path / "outputs" / "multiruns").glob("exp_*_*"))
  assert len(sweeps) == 1 and sweeps[0].name.endswith("_sweep")
  run_dirs = sorted(p.parent for p in sweeps[0].glob("*/summary.json"))
  assert len(run_dirs) == 2
  optimizers = set()
  for run_dir in run_dirs:
    assert read_summary(run_dir)["final_step"] == 5
    optimizers.add(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optim"]["name"])
  assert optimizers == {"adam", "sgd"}
  assert not (tmp_path / "outputs" / "runs").exists()


def test_help_still_works(tmp_path):
  proc = run_cli(["--help"], cwd=tmp_path, env=cli_env(), timeout=120)
  assert proc.returncode == 0
  assert "optim" in proc.stdout


def test_validating_the_same_config_again_gives_an_independent_equal_spec(monkeypatch):
  """The command line validates each job twice (before Hydra, then in the job); the second is a copy."""
  import jaxtrain
  from jaxtrain.config.validate import validate
  from jaxtrain.errors import ConfigError

  cfg = jaxtrain.compose(["trainer.steps=7"])
  first, second = validate(cfg), validate(cfg)
  assert first.config == second.config and first.task == second.task and first.raw == second.raw
  assert first.config is not second.config and second.task.model is second.config.model
  first.config.trainer.steps = 99  # a caller's change stays its own
  assert validate(cfg).config.trainer.steps == 7
  assert validate(jaxtrain.compose(["trainer.steps=8"])).config.trainer.steps == 8
  with pytest.raises(ConfigError):  # a bad config after a good one still fails
    validate(jaxtrain.compose(["trainer.steps=-1"]))
  # The same text resolving to another value is validated anew.
  monkeypatch.setenv("JAXTRAIN_TEST_RUN_NAME", "first")
  named = jaxtrain.compose(["run.name=${oc.env:JAXTRAIN_TEST_RUN_NAME}"])
  assert validate(named).config.run.name == "first"
  monkeypatch.setenv("JAXTRAIN_TEST_RUN_NAME", "second")
  assert validate(named).config.run.name == "second"
