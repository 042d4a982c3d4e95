"""Every command in the README's ```bash blocks (and every ```python block) works as documented.

Each command is accounted for in COMMANDS, which says how it is checked and why:

  run       executed as written (placeholders such as DIR or <run id> filled in with real values), in a
            scratch directory that stands for the repository root, with a fresh experiment database: shell
            lines in bash, `python -m jaxtrain.main` in a subprocess, the light tools (runs, evaluate,
            data.check) through their main(argv) in this process, which is what `python -m` calls;
  shortened executed as written plus `trainer.steps=...` overrides at the end (the last value wins), because the
            documented length takes minutes;
  compose   the jaxtrain overrides are composed and validated (`jaxtrain.main.check_overrides`, or the
            sweep's and evaluate's own checks): a renamed key, option or preset fails here; used for runs that
            train longer than a few seconds or need hardware, a cluster or a cloud account;
  dry-run   a launcher run as written with JAXTRAIN_DRY_RUN=1 (it prints what it would start), plus compose;
  recipe    a shell recipe run as written against stub cluster tools (srun, scontrol, scancel);
  covered   run by the named test elsewhere (the reference is checked to exist);
  ci        run as written by .ci/run in a fresh virtual environment (checked to be there, verbatim).

A README command with no entry fails `test_every_readme_command_is_accounted_for`, and so does an entry whose
command left the README: new docs cannot rot silently. The same holds for ```python blocks (PYTHON_BLOCKS).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"

# Appended to the commands marked "shortened": a few seconds instead of minutes.
SHORT = "trainer.steps=60 trainer.epochs=null trainer.eval_every=30 checkpoint.every=30 logging.progress=none"

# command (continuation lines joined, trailing comment dropped) -> (how, why)
COMMANDS: dict[str, tuple[str, str]] = {
    # Set up
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && python -m jaxtrain.main":
        ("ci", "installs into a new venv and trains 2,000 steps: .ci/run runs it in a copy of the repository"),
    "pip install -e '.[test]' && python -m pytest -q":
        ("ci", "the whole suite: .ci/run ends with it"),
    # A five-minute tour
    "python -m jaxtrain.main optim=sgd optim.lr=0.05 schedule=step_decay trainer.epochs=50":
        ("compose", "250 steps"),
    "python -m jaxtrain.main trainer.steps=500 checkpoint.every=100 run.name=short":
        ("compose", "500 steps; the CLI itself runs in the `lr3` command below"),
    "python -m jaxtrain.main --multirun optim.lr=1e-3,3e-3 optim=adam,adamw":
        ("compose", "four runs of 2,000 steps; every job of the grid is composed"),
    "launch/local.sh --cpu-devices 8 mesh.data=4 mesh.fsdp=2 trainer.steps=200":
        ("compose", "launch/local.sh runs for real in "
         "tests/test_docs_examples.py::test_local_launcher_splits_the_cpu_into_devices"),
    # Tasks, models and evaluation
    "python -m jaxtrain.evaluate outputs/runs/run_<ts>_default --step best":
        ("run", "through its main() in this process, on the run of the README's Python example"),
    "python -m jaxtrain.evaluate <run_dir> --step 1000 'eval.evaluators=[{name: metrics}, {name: recall_at_k}]'":
        ("compose", "step 1000 needs a 1,000-step run; its overrides are applied to a real run's config"),
    # Hyperparameter sweeps
    "python -m jaxtrain.sweep":
        ("compose", "8 trials, minutes; the sweep's own plan (space, trial overrides) is checked"),
    "python -m jaxtrain.sweep sweep.n_trials=20 sweep.n_jobs=2 trainer.steps=500 'sweep.params={optim.lr: {type: "
    "float, low: 1e-4, high: 1e-2, log: true}, optim: {type: categorical, choices: [adam, adamw]}}'":
        ("compose", "20 trials; every categorical choice is composed"),
    "python -m jaxtrain.sweep sweep.dir=outputs/sweeps/mine":
        ("compose", "8 trials; resuming a sweep is tests/test_sweep.py's"),
    # Env profiles
    "mkdir -p ~/jaxtrain-site/env && cat > ~/jaxtrain-site/env/mysite.yaml <<'YAML'\nname: mysite\n"
    "data_root: /data/shared\noutput_root: /lustre/${oc.env:USER}/outputs\ncache_dir: /local/jax-cache\nYAML":
        ("run", "with HOME in the scratch directory"),
    "python -m jaxtrain.main hydra.searchpath=[file://$HOME/jaxtrain-site] env=mysite":
        ("compose", "its output_root, /lustre, does not exist here; the profile written above must be found"),
    # Experiment database and writers
    "python -m jaxtrain.main run.name=lr3 optim.lr=3e-3 'logging.writers=[jsonl,csv,tensorboard]'":
        ("shortened", "2,000 steps as written; the runs commands below query this run"),
    "python -m jaxtrain.runs list --status finished --where optim.lr=0.003": ("run", ""),
    "python -m jaxtrain.runs show lr3": ("run", ""),
    "python -m jaxtrain.runs compare lr3 <run id>": ("run", "<run id>: the Python example's run"),
    "python -m jaxtrain.runs best --metric val/loss --mode min": ("run", ""),
    "python -m jaxtrain.runs [--db postgresql://user@host/experiments] export --csv runs.csv [--table metrics]":
        ("run", "without the optional parts, with --table metrics, and with --db naming the SQLite database "
         "(no PostgreSQL here)"),
    # Resuming
    "python -m jaxtrain.main run.dir=outputs/runs/mine":
        ("compose", "2,000 steps; kill-and-resume is tests/test_resume.py's and tests/test_fault_tolerance.py's"),
    "python -m jaxtrain.main run.resume=outputs/runs/mine run.name=finetune optim.lr=1e-4":
        ("compose", "2,000 steps; starting from another run is tests/test_resume.py's"),
    # When runs get interrupted
    "python -m jaxtrain.verify_resume trainer.steps=200 checkpoint.every=50":
        ("compose", "trains three times; tests/test_verify_resume.py runs the tool"),
    "python -m jaxtrain.verify_resume --at 120 --kind sigterm task=mytask ...":
        ("compose", "`task=mytask ...` stands for the reader's own config: only the flags are parsed"),
    'srun python -m jaxtrain.main run.dir=$SCRATCH/runs/$SLURM_JOB_NAME "$@"':
        ("recipe", "srun and scontrol stubbed; the overrides composed"),
    "status=$?": ("recipe", "the SLURM requeue recipe"),
    "if [ $status -eq 75 ]; then scontrol requeue $SLURM_JOB_ID; fi": ("recipe", "the SLURM requeue recipe"),
    "exit $status": ("recipe", "the SLURM requeue recipe"),
    "age=$(( $(date +%s) - $(python -c 'import json,sys; print(int(json.load(open(sys.argv[1]))[\"time\"]))' "
    '"$RUN/heartbeat.json") ))': ("recipe", "the heartbeat watchdog, on a real run and a stale heartbeat"),
    "phase=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"phase\"])' \"$RUN/heartbeat.json\")":
        ("recipe", "the heartbeat watchdog"),
    'if [ "$phase" = training ] && [ $age -gt 600 ]; then scancel "$JOB_ID"; fi':
        ("recipe", "the heartbeat watchdog"),
    # Your own data
    "python -m jaxtrain.data.check DIR": ("run", "DIR: two small NPZ datasets written by the test"),
    "python -m jaxtrain.main data=dataset_dir data.dataset_configs_path=DIR data.curriculum.kind=linear "
    "'data.curriculum.start_weights=[1,0]' 'data.curriculum.end_weights=[0.5,0.5]' data.curriculum.ramp_steps=1000 "
    "data.mining.enabled=true":
        ("compose", "DIR: the same two datasets"),
    # Your own task / encoder
    "JAXTRAIN_PLUGINS=mypkg.regression python -m jaxtrain.main task=digit_regression task.hidden=128":
        ("covered", "tests/test_docs_examples.py::test_readme_custom_task_trains_from_the_cli"),
    "JAXTRAIN_PLUGINS=mypkg.encoders python -m jaxtrain.main model/encoder=residual model.encoder.width=64":
        ("covered", "tests/test_docs_examples.py::test_readme_custom_encoder_trains_with_the_builtin_autoencoder"),
    # Many processes and machines
    "launch/local_multiprocess.sh 2 --cpu-devices 2 trainer.steps=200 run.dir=outputs/runs/two":
        ("dry-run", "two processes training for real: "
         "tests/test_distributed.py::test_two_processes_match_one_process_bit_for_bit"),
    "mkdir -p my-configs/experiment && cat > my-configs/experiment/digits_long.yaml <<'YAML'\n"
    "# @package _global_\noptim:\n  lr: 3.0e-3\ntrainer:\n  steps: 4000\n  epochs: null\nYAML":
        ("run", "the preset the launcher commands below use"),
    "python -m jaxtrain.main 'hydra.searchpath=[file://my-configs]' +experiment=digits_long --cfg job":
        ("compose", "the preset must be found and set optim.lr"),
    "launch/local_multiprocess.sh 2 --cpu-devices 4 'hydra.searchpath=[file://my-configs]' +experiment=digits_long":
        ("dry-run", "4,000 steps"),
    "launch/tpu_pod.sh my-tpu us-central2-b 'hydra.searchpath=[file://my-configs]' +experiment=digits_long "
    "run.dir=/mnt/shared/runs/digits_long": ("dry-run", "needs gcloud and a TPU"),
    "JAXTRAIN_RUN_DIR=$SCRATCH/runs/digits_long sbatch launch/slurm.sbatch 'hydra.searchpath=[file://my-configs]' "
    "+experiment=digits_long env=slurm": ("dry-run", "sbatch runs the script: here bash with SLURM_* set"),
    "condor_submit machines=4 run_dir=/shared/runs/digits_long 'overrides=hydra.searchpath=[file://my-configs] "
    "+experiment=digits_long' launch/condor.sub":
        ("dry-run", "condor_submit runs launch/condor_node.sh with these values: node 0 of 4 dry-run here"),
    "run=outputs/runs/quickstart": ("run", "the replay block, run as a whole; the notebook's run is a real run"),
    "mapfile -t overrides < <(python -c 'import sys, yaml; [print(o) for o in yaml.safe_load(open(sys.argv[1]))]' "
    '"$run/.hydra/overrides.yaml")': ("run", "the replay block"),
    'launch/tpu_pod.sh my-tpu us-central2-b "${overrides[@]}" run.dir=/mnt/shared/runs/quickstart-pod':
        ("dry-run", "the replay block; the replayed overrides are composed"),
    # Sharding, precision and memory
    "python -m jaxtrain.main task=lm mesh=fsdp_tensor": ("compose", "2,000 lm steps; needs 2+ devices"),
    "python -m jaxtrain.main mesh=zero1 trainer.precision=bf16 model.remat=full": ("compose", "2,000 steps"),
    "python -m jaxtrain.main mesh.data=2 mesh.fsdp=2 mesh.tensor=2 'mesh.rules=[[\".*hidden_0/kernel\",[null,tensor]],"
    "[\".*hidden_1/kernel\",[tensor]]]'": ("compose", "needs 8 devices; tests/test_sharding_rules.py trains with rules"),
}

# ```python blocks, each recognised by a snippet: (how, why or where)
PYTHON_BLOCKS: dict[str, tuple[str, str]] = {
    'jaxtrain.compose(["trainer.steps=300", "run.name=from-python"])':
        ("run", "as written, in this process, in the scratch directory"),
    "@jaxtrain.register_task": ("covered", "tests/test_docs_examples.py::test_readme_custom_task_trains_from_the_cli"),
    "@jaxtrain.register_component":
        ("covered", "tests/test_docs_examples.py::test_readme_custom_encoder_trains_with_the_builtin_autoencoder"),
}


# ---------------------------------------------------------------------------
# Reading the README

def fenced_blocks(markdown: str, language: str) -> list[str]:
  return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.S)


def _strip_comment(line: str) -> str:
  """The line without a trailing `# ...` comment (a # inside quotes or a word stays)."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char == "#" and (i == 0 or line[i - 1] in " \t"):
      return line[:i].rstrip()
  return line.rstrip()


def block_commands(block: str) -> list[str]:
  """The commands of one bash block: continuation lines joined, a heredoc kept with the command that
  opens it (its body verbatim), comment lines and trailing comments dropped."""
  commands, lines = [], block.splitlines()
  i = 0
  while i < len(lines):
    line = _strip_comment(lines[i])
    i += 1
    while line.endswith("\\") and i < len(lines):
      line = line[:-1].rstrip() + " " + _strip_comment(lines[i]).strip()
      i += 1
    if not line.strip():
      continue
    heredoc = re.search(r"<<-?'?(\w+)'?\s*$", line)
    if heredoc:
      end = lines.index(heredoc.group(1), i)
      line = "\n".join([line, *lines[i:end], heredoc.group(1)])
      i = end + 1
    commands.append(line)
  return commands


def readme_commands() -> list[str]:
  return [c for block in fenced_blocks(README.read_text(), "bash") for c in block_commands(block)]


def commands_of(how: str) -> list[str]:
  return [c for c, (kind, _) in COMMANDS.items() if kind == how]


def test_block_parser():
  block = "a x=1 \\\n    'y=#2'   # note\n# only a comment\ncat > f <<'EOF'\n# kept\nEOF\nb\n"
  assert block_commands(block) == ["a x=1 'y=#2'", "cat > f <<'EOF'\n# kept\nEOF", "b"]


def test_every_readme_command_is_accounted_for():
  found = readme_commands()
  missing = [c for c in found if c not in COMMANDS]
  assert not missing, ("README commands with no entry in tests/test_readme_commands.py COMMANDS (add one that "
                       "says how the command is checked):\n" + "\n".join(missing))
  stale = [c for c in COMMANDS if c not in found]
  assert not stale, "COMMANDS entries no longer in the README (update or remove them):\n" + "\n".join(stale)
  kinds = {"run", "shortened", "compose", "dry-run", "recipe", "covered", "ci"}
  assert {kind for kind, _ in COMMANDS.values()} <= kinds


def test_every_readme_python_block_is_accounted_for():
  for block in fenced_blocks(README.read_text(), "python"):
    matches = [snippet for snippet in PYTHON_BLOCKS if snippet in block]
    assert len(matches) == 1, f"README python block matches {matches} in PYTHON_BLOCKS:\n{block[:300]}"


def _test_exists(reference: str) -> bool:
  path, _, name = reference.partition("::")
  return re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), flags=re.M) is not None


def test_covered_commands_name_existing_tests():
  references = [why for kind, why in [*COMMANDS.values(), *PYTHON_BLOCKS.values()] if kind == "covered"]
  for reference in references:
    assert _test_exists(reference), f"{reference}: no such test"


def test_ci_runs_the_setup_and_test_commands_as_written():
  script = CI_SCRIPT.read_text()
  for command in commands_of("ci"):
    assert command in script, f".ci/run does not run the README's command: {command}"
  last = [l for l in script.splitlines() if l.strip() and not l.lstrip().startswith("#")][-1]
  assert last == "pip install -e '.[test]' && python -m pytest -q", ".ci/run must end with the README's test command"


# ---------------------------------------------------------------------------
# Composing overrides

def jaxtrain_args(command: str) -> tuple[str, list[str]]:
  """(entry point, its arguments) of a command: python -m <module> args, or a launcher's trailing overrides."""
  words = shlex.split(command)
  while words and re.match(r"^[A-Z_]+=", words[0]):
    words = words[1:]  # VAR=value prefixes
  if words[0] == "srun":
    words = words[1:]
  if words[:2] == ["python", "-m"]:
    return words[2], words[3:]
  launcher = words[0] if words[0] != "sbatch" else words[1]
  args = words[1:] if words[0] != "sbatch" else words[2:]
  if launcher == "launch/local_multiprocess.sh":
    args = args[1:]
  if launcher == "launch/tpu_pod.sh":
    args = args[2:]
  if args[:1] == ["--cpu-devices"]:
    args = args[2:]
  return "jaxtrain.main", args


def check_jaxtrain_command(module: str, args: list[str]) -> list:
  """Composes and validates what `python -m <module> args` would run; returns the composed configs."""
  from jaxtrain.main import check_overrides

  if module == "jaxtrain.main":
    return check_overrides(args)
  if module == "jaxtrain.sweep":
    from jaxtrain.sweep import plan_sweep

    plan_sweep(args)
    return []
  if module == "jaxtrain.verify_resume":
    flags = [a for a in args if a.startswith("--")]
    overrides = [a for a in args if "=" in a and not a.startswith("--")]
    for flag, value in zip(args, args[1:]):
      if flag == "--kind":
        from jaxtrain.faults import FAULT_KINDS

        assert value in FAULT_KINDS, value
    assert set(flags) <= {"--at", "--kind", "--seed", "--workdir"}, flags
    return [] if "..." in args else check_overrides(overrides)
  raise AssertionError(f"no composition check for python -m {module}")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
  """A scratch directory standing for the repository root, with the data and presets the commands refer to."""
  root = tmp_path_factory.mktemp("readme")
  rng = np.random.default_rng(0)
  data = root / "DIR"
  data.mkdir()
  for name in ("a", "b"):
    np.savez(data / f"{name}.npz", x=rng.normal(size=(40, 6)).astype(np.float32))
    (data / f"{name}.yaml").write_text(f"path: {name}.npz\n")
  return root


@contextlib.contextmanager
def inside(directory: Path, **env: str | None):
  """cwd and environment variables set for the body (None removes a variable)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.chdir(directory)
    for key, value in env.items():
      if value is None:
        patch.delenv(key, raising=False)
      else:
        patch.setenv(key, value)
    yield


def _fill(command: str, scratch: Path) -> str:
  return command.replace("data.dataset_configs_path=DIR", f"data.dataset_configs_path={scratch / 'DIR'}")


@pytest.mark.parametrize("command", [c for c in commands_of("compose") if "jaxtrain.evaluate" not in c
                                     and "hydra.searchpath" not in c], ids=lambda c: c[:60])
def test_compose(command, scratch):
  module, args = jaxtrain_args(_fill(command, scratch))
  with inside(scratch):
    configs = check_jaxtrain_command(module, args)
  if "--multirun" in command:
    assert len(configs) == 4


def test_presets_from_a_config_directory_compose(scratch, tmp_path):
  """The env profile and the experiment preset, written by their README blocks as written, are found."""
  home = tmp_path / "home"
  home.mkdir()
  env = dict(_user_env(), HOME=str(home), USER="someone")
  for command in [c for c in commands_of("run") if "<<'YAML'" in c]:
    subprocess.run(["bash", "-euc", command], cwd=scratch, env=env, check=True)
  from jaxtrain.main import check_overrides

  profile = next(c for c in COMMANDS if "env=mysite" in c and c.startswith("python"))
  with inside(scratch, HOME=str(home), USER="someone"):
    cfg, = check_overrides(shlex.split(profile.replace("$HOME", str(home)))[3:])
    assert cfg.env.output_root == "/lustre/someone/outputs" and cfg.run.root == cfg.env.output_root
    preset = next(c for c in COMMANDS if c.endswith("+experiment=digits_long --cfg job"))
    args = [a for a in shlex.split(preset)[3:] if a not in ("--cfg", "job")]
    cfg, = check_overrides(args)
    assert cfg.optim.lr == 3e-3 and cfg.trainer.steps == 4000


# ---------------------------------------------------------------------------
# Launchers, dry-run

def _user_env(**extra: str) -> dict[str, str]:
  """The environment of someone running the README's commands: one CPU device (not the tests' 8), the
  experiment database in outputs/ (no JAXTRAIN_DB_URL), the repository's launch/ scripts reachable."""
  env = {k: v for k, v in os.environ.items() if k not in ("JAXTRAIN_DB_URL", "XLA_FLAGS", "PWD")}
  env.update(PYTHON=sys.executable, PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
  env.update(extra)
  return env


def _link_launch(scratch: Path) -> None:
  if not (scratch / "launch").exists():
    (scratch / "launch").symlink_to(ROOT / "launch")


@pytest.mark.parametrize("command", [c for c in commands_of("dry-run") if "${overrides[@]}" not in c],
                         ids=lambda c: c[:60])
def test_launcher_dry_run(command, scratch):
  _link_launch(scratch)
  env = _user_env(JAXTRAIN_DRY_RUN="1", SCRATCH="/scratch/someone", SLURM_JOB_ID="4242",
                  SLURM_JOB_NAME="jaxtrain", SLURM_JOB_NODELIST="node[01-02]", SLURM_JOB_NUM_NODES="2")
  if command.startswith("condor_submit"):
    values = dict(w.split("=", 1) for w in shlex.split(command)[1:-1])
    shell = " ".join(["launch/condor_node.sh", "0", values["machines"], values["run_dir"], "7", values["overrides"]])
    args = shlex.split(values["overrides"])
  else:
    shell = command.replace("sbatch launch/slurm.sbatch", "bash launch/slurm.sbatch")
    args = jaxtrain_args(command.replace("$SCRATCH", "/scratch/someone"))[1]
  proc = subprocess.run(["bash", "-c", shell], cwd=scratch, env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  # The launcher passes the overrides on (those with brackets come back shell-quoted).
  assert "jaxtrain.main" in proc.stdout and all(a in proc.stdout for a in args if "[" not in a), proc.stdout
  _write_preset(scratch)
  from jaxtrain.main import check_overrides

  with inside(scratch):
    check_overrides(args)


def _write_preset(scratch: Path) -> None:
  command = next(c for c in commands_of("run") if "my-configs/experiment" in c)
  subprocess.run(["bash", "-euc", command], cwd=scratch, check=True)


# ---------------------------------------------------------------------------
# Shell recipes against stub cluster tools

def _stubs(directory: Path, **bodies: str) -> Path:
  directory.mkdir(exist_ok=True)
  for name, body in bodies.items():
    (directory / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
    (directory / name).chmod(0o755)
  return directory


def test_slurm_requeue_recipe(tmp_path):
  recipe = next(b for b in fenced_blocks(README.read_text(), "bash") if b.startswith("srun "))
  assert all(c in COMMANDS and COMMANDS[c][0] == "recipe" for c in block_commands(recipe))
  calls = tmp_path / "calls"
  bin_dir = _stubs(tmp_path / "bin", srun=f'echo "srun $*" >> {calls}; exit 75',
                   scontrol=f'echo "scontrol $*" >> {calls}')
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SCRATCH="/scratch/someone", SLURM_JOB_NAME="mine",
             SLURM_JOB_ID="4242")
  proc = subprocess.run(["bash", "-c", recipe, "recipe", "optim.lr=3e-3"], env=env, capture_output=True, text=True)
  assert proc.returncode == 75
  assert calls.read_text().splitlines() == [
      "srun python -m jaxtrain.main run.dir=/scratch/someone/runs/mine optim.lr=3e-3", "scontrol requeue 4242"]
  from jaxtrain.main import check_overrides

  check_overrides(["run.dir=/scratch/someone/runs/mine", "optim.lr=3e-3"])


# ---------------------------------------------------------------------------
# Commands run as written, sharing one scratch directory and one experiment database

@pytest.fixture(scope="module")
def real_runs(scratch):
  """The README's Python example (in this process) and the `lr3` command (a subprocess), both in `scratch`,
  recording themselves in scratch/outputs/experiments.db as a user's runs would."""
  import jaxtrain

  block = next(b for b in fenced_blocks(README.read_text(), "python") if "run.name=from-python" in b)
  namespace = {}
  with inside(scratch, JAXTRAIN_DB_URL=None):
    exec(compile(block, "README.md python example", "exec"), namespace)
  python_run = scratch / namespace["result"].run_dir
  assert namespace["result"].summary["final_step"] == 300
  command = next(c for c in commands_of("shortened") if "run.name=lr3" in c)
  proc = subprocess.run(["bash", "-c", f"{command} {SHORT}"], cwd=scratch, env=_user_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lr3_run, = (scratch / "outputs" / "runs").glob("run_*_lr3")
  assert any((lr3_run / "tensorboard").iterdir())
  return {"python": python_run, "lr3": lr3_run}


def test_runs_commands(real_runs, scratch, capsys):
  from jaxtrain import runs

  python_id = (real_runs["python"] / "facts" / "run_id").read_text().strip()
  argvs = []
  for command in [c for c in commands_of("run") if c.startswith("python -m jaxtrain.runs")]:
    command = command.replace("<run id>", python_id)
    if "[--table metrics]" in command:
      base = re.sub(r" ?\[[^]]*\]", "", command)
      with_db = base.replace("jaxtrain.runs", "jaxtrain.runs --db sqlite:///outputs/experiments.db")
      argvs += [base, f"{base} --table metrics", with_db]
    else:
      argvs.append(command)
  outputs = {}
  with inside(scratch, JAXTRAIN_DB_URL=None):
    for command in argvs:
      assert runs.main(shlex.split(command)[3:]) == 0, command
      outputs[command] = capsys.readouterr().out
  listing = outputs["python -m jaxtrain.runs list --status finished --where optim.lr=0.003"]
  assert "lr3" in listing and "from-python" not in listing
  assert "lr3" in outputs["python -m jaxtrain.runs show lr3"]
  assert (scratch / "runs.csv").read_text().count("\n") >= 2


def test_evaluate_best_checkpoint(real_runs, scratch):
  command, = [c for c in commands_of("run") if c.startswith("python -m jaxtrain.evaluate")]
  relative = real_runs["python"].relative_to(scratch)
  assert re.fullmatch(r"outputs/runs/run_[0-9-]+_from-python", str(relative))
  from jaxtrain import evaluate

  with inside(scratch, JAXTRAIN_DB_URL=None):
    evaluate.main(shlex.split(command.replace("outputs/runs/run_<ts>_default", str(relative)))[3:])
  best = json.loads((real_runs["python"] / "summary.json").read_text())["best_step"]
  assert (real_runs["python"] / "evaluations" / f"step_{best}.json").exists()
  # The second evaluate command: its overrides applied to the same run's config.
  from jaxtrain.evaluate import load_run_config

  command, = [c for c in commands_of("compose") if c.startswith("python -m jaxtrain.evaluate")]
  args = shlex.split(command)[3:]
  assert args[:3] == ["<run_dir>", "--step", "1000"]
  cfg = load_run_config(real_runs["python"], args[3:])
  assert [e["name"] for e in cfg.eval.evaluators] == ["metrics", "recall_at_k"]


def test_heartbeat_watchdog_recipe(real_runs, tmp_path):
  recipe = next(b for b in fenced_blocks(README.read_text(), "bash") if b.startswith("age="))
  assert all(c in COMMANDS and COMMANDS[c][0] == "recipe" for c in block_commands(recipe))
  calls = tmp_path / "calls"
  bin_dir = _stubs(tmp_path / "bin", scancel=f'echo "scancel $*" >> {calls}',
                   python=f'exec {shlex.quote(sys.executable)} "$@"')
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", JOB_ID="4242")
  finished = subprocess.run(["bash", "-c", recipe], env=dict(env, RUN=str(real_runs["lr3"])), capture_output=True,
                            text=True)
  assert finished.returncode == 0 and not calls.exists(), finished.stderr
  stale = tmp_path / "stale"
  stale.mkdir()
  (stale / "heartbeat.json").write_text(json.dumps({"time": 0, "phase": "training", "step": 7}))
  hung = subprocess.run(["bash", "-c", recipe], env=dict(env, RUN=str(stale)), capture_output=True, text=True)
  assert hung.returncode == 0 and calls.read_text() == "scancel 4242\n", hung.stderr


def test_replay_a_run_on_a_pod(real_runs, scratch):
  """The notebook-to-pod block as written: a run's recorded overrides, read back, handed to tpu_pod.sh."""
  _link_launch(scratch)
  block = next(b for b in fenced_blocks(README.read_text(), "bash") if b.startswith("run=outputs/runs/quickstart"))
  assert all(c in COMMANDS for c in block_commands(block))
  notebook_run = scratch / "outputs" / "runs" / "quickstart"
  shutil.copytree(real_runs["lr3"] / ".hydra", notebook_run / ".hydra")
  proc = subprocess.run(["bash", "-c", block], cwd=scratch, env=_user_env(JAXTRAIN_DRY_RUN="1"),
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  recorded = yaml.safe_load((notebook_run / ".hydra" / "overrides.yaml").read_text())
  assert "optim.lr=3e-3" in recorded and "gcloud compute tpus tpu-vm ssh my-tpu" in proc.stdout
  assert "optim.lr=3e-3" in proc.stdout
  assert re.findall(r"run\.dir=[^\\ ]*", proc.stdout)[-1] == "run.dir=/mnt/shared/runs/quickstart-pod"
  from jaxtrain.main import check_overrides

  cfg, = check_overrides([*recorded, "run.dir=/mnt/shared/runs/quickstart-pod"])
  assert cfg.run.dir == "/mnt/shared/runs/quickstart-pod" and cfg.optim.lr == 3e-3


def test_data_check(scratch, capsys):
  from jaxtrain.data import check

  command, = [c for c in commands_of("run") if c.startswith("python -m jaxtrain.data.check")]
  assert check.main([str(scratch / "DIR") if a == "DIR" else a for a in shlex.split(command)[3:]]) == 0
  assert capsys.readouterr().out.count("\n") == 2  # one line per dataset


# ---------------------------------------------------------------------------
# The README's sample error messages

def test_readme_error_examples_match():
  from jaxtrain.errors import ConfigError
  from jaxtrain.main import check_overrides

  text = "\n".join(fenced_blocks(README.read_text(), "text"))
  examples = re.findall(r"^\$ python -m jaxtrain\.main (.*)\n(jaxtrain: error: .*)$", text, flags=re.M)
  assert len(examples) >= 2
  for args, message in examples:
    with pytest.raises(ConfigError) as err:
      check_overrides(shlex.split(args))
    assert f"jaxtrain: error: {err.value}" == message


# ---------------------------------------------------------------------------
# Keys named anywhere in the docs exist; docs/MIGRATING.md's commands and examples work; the module map is whole

DOCS = [README, ROOT / "docs" / "MIGRATING.md", ROOT / "docs" / "ARCHITECTURE.md"]
_GROUPS = "trainer|optim|schedule|data|mesh|checkpoint|run|logging|model|eval|dist|env|sweep|db"
# A dotted config key: not part of a longer name (jaxtrain.data.check), not a file (checkpoint.py) or a call
# (HF's trainer.evaluate()).
_KEY = re.compile(rf"(?<![\w./$-])((?:{_GROUPS})\.[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?![\w(])")
# Named on purpose although they do not exist: the README's example of a mistyped key.
NOT_KEYS = {"run.resum"}


def test_documented_keys_exist():
  """Every `group.key` the docs mention is a key of the composed default config (model parts' own options,
  which depend on the part chosen, and task.* keys, which depend on the task, are checked by the commands)."""
  from omegaconf import OmegaConf

  import jaxtrain

  cfg = jaxtrain.compose([])
  unknown = []
  for doc in DOCS:
    for key in sorted(set(_KEY.findall(doc.read_text())) - NOT_KEYS):
      parts = key.split(".")
      if key.endswith(".py") or (parts[0] == "model" and len(parts) > 2 and parts[1] in ("encoder", "latent",
                                                                                        "decoder")):
        continue
      node = cfg
      for part in parts:
        if not (OmegaConf.is_dict(node) and part in node):
          unknown.append(f"{doc.name}: {key}")
          break
        node = node[part]
  assert not unknown, "keys in the docs that the config does not have:\n" + "\n".join(unknown)


def test_migrating_commands_compose(scratch):
  from jaxtrain.main import check_overrides

  commands = [c for b in fenced_blocks((ROOT / "docs" / "MIGRATING.md").read_text(), "bash")
              for c in block_commands(b)]
  assert len(commands) >= 3 and all(c.startswith("python -m jaxtrain.main ") for c in commands), commands
  with inside(scratch):
    for command in commands:
      check_overrides(shlex.split(command)[3:])


def test_migrating_python_examples_run(scratch):
  """The task written like a LightningModule, and the callback written as a PeriodicAction, run as written
  (the block quoting Lightning's own configure_optimizers is PyTorch, not run)."""
  blocks = [b for b in fenced_blocks((ROOT / "docs" / "MIGRATING.md").read_text(), "python") if "torch." not in b]
  assert len(blocks) == 2
  for block in blocks:
    namespace = {}
    with inside(scratch, JAXTRAIN_DB_URL=None):
      exec(compile(block, "docs/MIGRATING.md example", "exec"), namespace)
    assert namespace["result"].summary["final_step"] == 100
  assert sorted(namespace["norm"].norms) == [50, 100]


def _package_modules() -> list[str]:
  """jaxtrain's modules as paths relative to jaxtrain/ (the files git knows when it is there, so that a
  module still being written in a working tree is not demanded yet)."""
  try:
    files = subprocess.run(["git", "ls-files", "jaxtrain"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):
    files = [str(p.relative_to(ROOT)) for p in (ROOT / "jaxtrain").rglob("*.py")]
  return sorted(str(Path(f).relative_to("jaxtrain")) for f in files
                if f.endswith(".py") and not f.endswith("__init__.py"))


def test_architecture_module_map_names_every_module():
  text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
  table = text[text.index("## Module map"):text.index("## Contracts")]
  rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
  missing = []
  for module in _package_modules():
    package, _, name = module.rpartition("/")
    if package:  # named in its package's row
      cells = [row[1] for row in rows if f"`{package}/`" in row[0]]
    else:  # named in the first column of a row
      cells = [row[0] for row in rows]
    if not any(f"`{name}`" in cell for cell in cells):
      missing.append(module)
  assert not missing, "docs/ARCHITECTURE.md's module map does not name: " + ", ".join(missing)
