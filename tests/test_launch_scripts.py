"""launch/: every script parses, and its dry run (or a run with fake cluster tools) hands each
process the right JAXTRAIN_* values. No jax here: the "python" these scripts start is a stub."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from _helpers import REPO

LAUNCH = REPO / "launch"
SHELL_SCRIPTS = ["local.sh", "local_multiprocess.sh", "slurm.sbatch", "condor_node.sh", "tpu_pod.sh"]


def _env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXTRAIN_", "SLURM_"))}
  env.update(extra)
  return env


def _run(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _stub(path: Path, body: str) -> Path:
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return path


def _assignments(words: list[str]) -> dict[str, str]:
  return dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_syntax(script):
  result = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


def test_local_multiprocess_dry_run():
  result = _run(["launch/local_multiprocess.sh", "3", "--cpu-devices", "2", "--dry-run", "trainer.steps=10"],
                _env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert result.returncode == 0, result.stderr
  lines = [shlex.split(line) for line in result.stdout.splitlines()]
  assert len(lines) == 3
  envs = [_assignments(words) for words in lines]
  assert [e["JAXTRAIN_PROCESS_ID"] for e in envs] == ["0", "1", "2"]
  assert {e["JAXTRAIN_NUM_PROCESSES"] for e in envs} == {"3"}
  assert len({e["JAXTRAIN_COORDINATOR"] for e in envs}) == 1
  assert re.fullmatch(r"127\.0\.0\.1:\d+", envs[0]["JAXTRAIN_COORDINATOR"])
  assert {e["XLA_FLAGS"] for e in envs} == {"--xla_force_host_platform_device_count=2"}  # the 8 replaced
  run_dirs = {w for words in lines for w in words if w.startswith("run.dir=")}
  assert len(run_dirs) == 1, "one shared run directory"
  assert all(words[words.index("-m") + 1:][0] == "jaxtrain.main" and "trainer.steps=10" in words for words in lines)


def test_local_multiprocess_stops_the_others_when_one_fails(tmp_path):
  python = _stub(tmp_path / "python", 'if [ "$JAXTRAIN_PROCESS_ID" = 1 ]; then sleep 0.5; exit 3; fi\n'
                 'exec sleep 60\n')  # exec: the launcher's kill must reach the sleeping process
  started = time.monotonic()
  result = _run(["launch/local_multiprocess.sh", "3", "run.dir=x"],
                _env(PYTHON=str(python), JAXTRAIN_COORDINATOR_PORT="1234"))
  assert result.returncode == 3, result.stderr
  assert time.monotonic() - started < 20
  assert "process 1 exited with 3; stopping the others" in result.stderr


def test_local_multiprocess_passes_on_a_preemption(tmp_path):
  python = _stub(tmp_path / "python", "exit 75\n")
  result = _run(["launch/local_multiprocess.sh", "2", "run.dir=x"],
                _env(PYTHON=str(python), JAXTRAIN_COORDINATOR_PORT="1234"))
  assert result.returncode == 75, result.stderr


def _sbatch_directives() -> list[str]:
  return [line.split(None, 1)[1].strip() for line in (LAUNCH / "slurm.sbatch").read_text().splitlines()
          if line.startswith("#SBATCH ")]


def test_slurm_directives():
  directives = _sbatch_directives()
  for expected in ("--signal=B:USR1@120", "--requeue", "--ntasks-per-node=1", "--open-mode=append"):
    assert expected in directives
  assert any(d.startswith("--nodes=") for d in directives)


SLURM_ENV = dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="jt", SLURM_JOB_NODELIST="gpu[07-08]", SLURM_JOB_NUM_NODES="2",
                 SLURM_NTASKS="2", SLURM_GPUS_ON_NODE="4")


def test_slurm_dry_run_one_process_per_node(tmp_path):
  result = _run(["launch/slurm.sbatch", "trainer.steps=10"],
                _env(**SLURM_ENV, JAXTRAIN_DRY_RUN="1", SCRATCH=str(tmp_path)))
  assert result.returncode == 0, result.stderr
  *env_lines, command = result.stdout.strip().splitlines()
  env = _assignments(env_lines)
  assert env == {"JAXTRAIN_COORDINATOR": "gpu07:24242", "JAXTRAIN_NUM_PROCESSES": "2",
                 "JAX_LOCAL_DEVICE_IDS": "0,1,2,3"}
  words = shlex.split(command)
  assert words[0] == "srun" and 'JAXTRAIN_PROCESS_ID="$SLURM_PROCID"' in " ".join(words)
  assert f"run.dir={tmp_path}/runs/jt-4242" in words and words[-1] == "trainer.steps=10"


def test_slurm_dry_run_one_process_per_gpu():
  result = _run(["launch/slurm.sbatch", "run.dir=/shared/mine"],
                _env(**{**SLURM_ENV, "SLURM_NTASKS": "8"}, JAXTRAIN_DRY_RUN="1"))
  assert result.returncode == 0, result.stderr
  *env_lines, command = result.stdout.strip().splitlines()
  env = _assignments(env_lines)
  assert env["JAXTRAIN_NUM_PROCESSES"] == "8" and "JAX_LOCAL_DEVICE_IDS" not in env  # jax: SLURM_LOCALID
  assert [w for w in shlex.split(command) if w.startswith("run.dir=")] == ["run.dir=/shared/mine"]


def test_slurm_maps_procid_and_requeues_a_preempted_job(tmp_path):
  """A run with stub srun (one task after the other), scontrol and python; the python exits 75."""
  calls = tmp_path / "calls.txt"
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _stub(bin_dir / "srun", 'while [[ "$1" == --* ]]; do shift; done\n'
        'for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" || status=$?; done\nexit ${status:-0}\n')
  _stub(bin_dir / "scontrol", f'if [ "$1" = show ]; then echo gpu07; else echo "scontrol $*" >> {calls}; fi\n')
  python = _stub(tmp_path / "python", f'echo "id=$JAXTRAIN_PROCESS_ID of=$JAXTRAIN_NUM_PROCESSES '
                 f'at=$JAXTRAIN_COORDINATOR $*" >> {calls}\nexit 75\n')
  env = _env(**SLURM_ENV, PYTHON=str(python), PATH=f"{bin_dir}:{os.environ['PATH']}", SCRATCH=str(tmp_path))
  result = _run(["launch/slurm.sbatch", "trainer.steps=10"], env)
  assert result.returncode == 75, result.stderr
  lines = calls.read_text().splitlines()
  args = f"-m jaxtrain.main run.dir={tmp_path}/runs/jt-4242 trainer.steps=10"
  assert lines == [f"id=0 of=2 at=gpu07:24242 {args}", f"id=1 of=2 at=gpu07:24242 {args}",
                   "scontrol requeue 4242"]


def _submit_file() -> dict[str, str]:
  entries = {}
  for line in (LAUNCH / "condor.sub").read_text().splitlines():
    if "=" in line and not line.lstrip().startswith("#"):
      key, _, value = line.partition("=")
      entries[key.strip()] = value.strip()
  return entries


def test_condor_submit_file():
  sub = _submit_file()
  assert sub["universe"] == "parallel" and sub["machine_count"] == "$(machines)"
  assert sub["executable"].endswith("/launch/condor_node.sh")
  assert sub["arguments"] == '"$(Node) $(machines) $(run_dir) $(Cluster) $(overrides)"'
  assert "75" in sub["on_exit_remove"]
  assert (LAUNCH / "condor.sub").read_text().rstrip().endswith("queue")


def test_condor_node_dry_runs(tmp_path):
  run_dir = tmp_path / "run"
  # The submit file's arguments for node 0 and node 1 of 2, cluster 7.
  args = lambda node: ["launch/condor_node.sh", str(node), "2", str(run_dir), "7", "trainer.steps=10"]  # noqa: E731
  head = _run(args(0), _env(JAXTRAIN_DRY_RUN="1", JAXTRAIN_COORDINATOR_PORT="5555"))
  assert head.returncode == 0, head.stderr
  *env_lines, command = head.stdout.strip().splitlines()
  env = _assignments(env_lines)
  assert env["JAXTRAIN_PROCESS_ID"] == "0" and env["JAXTRAIN_NUM_PROCESSES"] == "2"
  assert env["JAXTRAIN_COORDINATOR"].endswith(":5555")
  assert shlex.split(command)[-2:] == [f"run.dir={run_dir}", "trainer.steps=10"]
  assert not run_dir.exists(), "a dry run writes nothing"

  run_dir.mkdir()
  (run_dir / ".coordinator-7").write_text("node0.example:5555\n")
  other = _run(args(1), _env(JAXTRAIN_DRY_RUN="1"))
  assert other.returncode == 0, other.stderr
  env = _assignments(other.stdout.splitlines())
  assert env == {"JAXTRAIN_COORDINATOR": "node0.example:5555", "JAXTRAIN_NUM_PROCESSES": "2",
                 "JAXTRAIN_PROCESS_ID": "1"}


def test_condor_node_ignores_a_stale_rendezvous(tmp_path):
  (tmp_path / ".coordinator-7").write_text("old:1\n")
  os.utime(tmp_path / ".coordinator-7", (time.time() - 3600,) * 2)
  result = _run(["launch/condor_node.sh", "1", "2", str(tmp_path), "7"],
                _env(JAXTRAIN_DRY_RUN="1", JAXTRAIN_RENDEZVOUS_SECS="1"))
  assert result.returncode == 2 and "did not write" in result.stderr


def test_tpu_pod_dry_run():
  result = _run(["launch/tpu_pod.sh", "--dry-run", "my-tpu", "us-central2-b", "run.dir=/mnt/shared/r",
                 "run.name=a b"], _env(TPU_PROJECT="proj"))
  assert result.returncode == 0, result.stderr
  words = shlex.split(result.stdout)
  assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--worker=all" in words and words[words.index("--zone") + 1] == "us-central2-b"
  assert words[words.index("--project") + 1] == "proj"
  remote = words[words.index("--command") + 1]
  assert remote.startswith("cd ~/jaxtrain && ")
  # What each worker's shell runs: no JAXTRAIN_* (jax reads the TPU VM), the overrides intact.
  assert shlex.split(remote.split("&&", 1)[1]) == ["python3", "-m", "jaxtrain.main", "run.dir=/mnt/shared/r",
                                                   "run.name=a b"]


def test_tpu_pod_needs_a_shared_run_dir():
  result = _run(["launch/tpu_pod.sh", "my-tpu", "zone"], _env())
  assert result.returncode == 2 and "run.dir" in result.stderr


def test_k8s_jobset():
  docs = [d for d in yaml.safe_load_all((LAUNCH / "k8s_jobset.yaml").read_text()) if d]
  assert len(docs) == 1 and docs[0]["kind"] == "JobSet"
  jobset = docs[0]
  (replicated,) = jobset["spec"]["replicatedJobs"]
  job = replicated["template"]["spec"]
  assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"]
  (container,) = job["template"]["spec"]["containers"]
  env = {e["name"]: e for e in container["env"]}
  assert int(env["JAXTRAIN_NUM_PROCESSES"]["value"]) == job["parallelism"]
  name, rjob = jobset["metadata"]["name"], replicated["name"]
  host, port = env["JAXTRAIN_COORDINATOR"]["value"].split(":")
  assert host == f"{name}-{rjob}-0-0.{name}"  # pod 0 of job 0, under the JobSet's headless service
  assert int(port) in [p["containerPort"] for p in container["ports"]]
  assert env["JAXTRAIN_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
      "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  assert container["command"] == ["python3", "-m", "jaxtrain.main"]
  run_dirs = [a for a in container["args"] if a.startswith("run.dir=")]
  mounts = [m["mountPath"] for m in container["volumeMounts"]]
  assert len(run_dirs) == 1 and any(run_dirs[0].removeprefix("run.dir=").startswith(m) for m in mounts)
