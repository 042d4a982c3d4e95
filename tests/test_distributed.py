"""Several processes on this machine, on JAX's distributed runtime (CPU collectives: gloo).

- 2 processes x 2 CPU devices (launch/local_multiprocess.sh) end with the same
  params fingerprint as 1 process x 4 devices with the runtime on (the same
  gloo collectives; without the runtime, in-process all-reduces sum in another
  order and the params differ in the last bit);
- only process 0 writes the shared files; every process writes its own
  checkpoint shards; log lines carry [p<index>];
- a process SIGKILLed mid-run stops the other within dist.heartbeat_timeout_secs;
- a peer that never arrives ends the run in one line, exit 2, at dist.timeout_secs;
- plan(): where the values come from (config, JAXTRAIN_*, cluster detection).

The first three subprocesses run concurrently; the SIGKILL pair reuses the first run's compiled steps.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from _helpers import REPO, cached_cli_env, read_events, read_summary, short_overrides
from jaxtrain import distributed
from jaxtrain.config.schema import DistConfig
from jaxtrain.errors import ConfigError

HEARTBEAT_SECS = 5


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(cache: Path, devices: int, **extra: str) -> dict[str, str]:
  """The test environment with `devices` CPU devices (instead of conftest's 8), a compilation cache
  shared by this module's runs, and no JAXTRAIN_* leftovers."""
  env = {k: v for k, v in cached_cli_env(cache).items() if not k.startswith("JAXTRAIN_")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
  return env


def _main(args: list[str], env: dict[str, str]) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "jaxtrain.main", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> None:
  """SIGTERM first: the launcher passes it on to its processes (in sessions of their own)."""
  proc.terminate()
  try:
    proc.communicate(timeout=30)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()


def _finish(proc: subprocess.Popen, timeout: float = 240) -> types.SimpleNamespace:
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    _stop(proc)
    pytest.fail(f"{proc.args} hung")
  return types.SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Started together: the 2-process run, its 1-process reference, and a process whose peer never comes."""
  root = tmp_path_factory.mktemp("distributed")
  multi, single, cache = root / "multi", root / "single", root / "cache"
  launcher = subprocess.Popen(
      ["bash", "launch/local_multiprocess.sh", "2", "--cpu-devices", "2", *short_overrides(multi)], cwd=REPO,
      env=_env(cache, 8, JAXTRAIN_COORDINATOR_PORT=str(_free_port()), PYTHON=sys.executable),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  reference = _main([*short_overrides(single), f"dist.coordinator=127.0.0.1:{_free_port()}",
                     "dist.num_processes=1"], _env(cache, 4))
  # Process 1 of 2, whose coordinator never starts: the library call alone, cheaper than a whole run.
  lonely = subprocess.Popen(
      [sys.executable, "-c", "from jaxtrain import distributed; from jaxtrain.config.schema import DistConfig; "
       f"distributed.initialize(DistConfig(coordinator='127.0.0.1:{_free_port()}', num_processes=2, "
       "process_id=1, timeout_secs=3))"],
      cwd=REPO, env=_env(cache, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  handles = {"launcher": launcher, "reference": reference, "lonely": lonely}
  done: dict[str, types.SimpleNamespace] = {}

  def result(name: str) -> types.SimpleNamespace:
    if name not in done:
      done[name] = _finish(handles[name])
    return done[name]

  yield types.SimpleNamespace(multi=multi, single=single, cache=cache, result=result)
  for proc in handles.values():
    if proc.poll() is None:
      _stop(proc)


def test_killed_process_stops_the_other_within_the_heartbeat_timeout(runs, tmp_path):
  # The 2-process run's config: its compiled steps come from the cache once it has finished.
  runs.result("launcher")
  args = [*short_overrides(tmp_path / "run"), f"dist.coordinator=127.0.0.1:{_free_port()}",
          "dist.num_processes=2", f"dist.heartbeat_timeout_secs={HEARTBEAT_SECS}"]
  survivor = _main([*args, "dist.process_id=0"], _env(runs.cache, 2))
  victim = _main([*args, "dist.process_id=1"], _env(runs.cache, 2, JAXTRAIN_FAULT="sigkill@3"))
  try:
    victim_result = _finish(victim)
    died = time.monotonic()
    survivor_result = _finish(survivor, timeout=HEARTBEAT_SECS + 60)
    waited = time.monotonic() - died
  finally:
    for proc in (survivor, victim):
      if proc.poll() is None:
        proc.kill()
  assert victim_result.returncode == -9, victim_result.stderr[-2000:]
  assert survivor_result.returncode != 0, survivor_result.stderr[-2000:]
  assert waited < HEARTBEAT_SECS + 30, f"the survivor took {waited:.1f} s to stop"
  print(f"survivor exited with {survivor_result.returncode} {waited:.1f} s after its peer was killed")


def test_missing_peer_fails_in_one_line(runs):
  lonely = runs.result("lonely")
  assert lonely.returncode == 2, lonely.stderr[-2000:]
  last = lonely.stderr.strip().splitlines()[-1]
  assert last.startswith("jaxtrain: error: [p1] dist:") and "dist.timeout_secs=3" in last, last
  assert "Check failure stack trace" not in lonely.stderr


def test_two_processes_match_one_process_bit_for_bit(runs):
  multi, single = runs.result("launcher"), runs.result("reference")
  assert multi.returncode == 0, multi.stderr[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  two, one = read_summary(runs.multi), read_summary(runs.single)
  assert two["devices"] == one["devices"] == 4
  assert two["final_step"] == 40
  assert two["final_metrics"] == one["final_metrics"]
  assert two["params_fingerprint"] == one["params_fingerprint"]


def test_process_zero_writes_the_shared_files_and_every_process_its_shards(runs):
  multi = runs.result("launcher")
  events = read_events(runs.multi)
  assert [e["event"] for e in events].count("on_start") == 1  # not one per process
  assert events[0]["processes"] == 2
  assert [e["event"] for e in events].count("on_train_end") == 1
  scalars = [(run / "facts" / "scalars.csv").read_text().splitlines() for run in (runs.multi, runs.single)]
  assert len(scalars[0]) == len(scalars[1]), "rows written twice"
  for step in (20, 40):
    state = runs.multi / "checkpoints" / str(step) / "state"
    assert {p.name for p in state.glob("ocdbt.process_*")} == {"ocdbt.process_0", "ocdbt.process_1"}
    data = runs.multi / "checkpoints" / str(step) / "data"
    assert {p.name for p in data.glob("process_*")} == {"process_0-of-2.json", "process_1-of-2.json"}
  logged = multi.stdout + multi.stderr
  assert "[p0] finished at step 40" in logged and "[p1] finished at step 40" in logged


def test_plan_takes_config_then_environment_then_cluster():
  no_cluster = lambda: None  # noqa: E731
  assert distributed.plan(DistConfig(), environ={}, detect=no_cluster) is None
  env = {"JAXTRAIN_COORDINATOR": "h:1", "JAXTRAIN_NUM_PROCESSES": "4", "JAXTRAIN_PROCESS_ID": "3"}
  got = distributed.plan(DistConfig(), environ=env, detect=no_cluster)
  assert (got.coordinator, got.num_processes, got.process_id) == ("h:1", 4, 3)
  got = distributed.plan(DistConfig(process_id=1, coordinator="c:2"), environ=env, detect=no_cluster)
  assert (got.coordinator, got.num_processes, got.process_id) == ("c:2", 4, 1)
  # A detected cluster fills in what is unset; jax reads the rest from it.
  got = distributed.plan(DistConfig(), environ={}, detect=lambda: ("slurm", 8))
  assert (got.coordinator, got.num_processes, got.process_id, got.source) == (None, None, None, "slurm (8 processes)")
  assert distributed.plan(DistConfig(), environ={}, detect=lambda: ("slurm", 1)) is None
  assert distributed.plan(DistConfig(auto=False), environ={}, detect=lambda: ("slurm", 8)) is None
  # One process with a coordinator: the runtime starts anyway (the multi-process collectives).
  got = distributed.plan(DistConfig(coordinator="h:1", num_processes=1), environ={}, detect=no_cluster)
  assert (got.num_processes, got.process_id) == (1, 0)


def test_plan_names_the_missing_value():
  no_cluster = lambda: None  # noqa: E731
  with pytest.raises(ConfigError, match=r"^dist.coordinator: .*JAXTRAIN_COORDINATOR"):
    distributed.plan(DistConfig(num_processes=2, process_id=0), environ={}, detect=no_cluster)
  with pytest.raises(ConfigError, match=r"^dist.process_id: "):
    distributed.plan(DistConfig(), environ={"JAXTRAIN_COORDINATOR": "h:1", "JAXTRAIN_NUM_PROCESSES": "2"},
                     detect=no_cluster)
  with pytest.raises(ConfigError, match=r"^JAXTRAIN_PROCESS_ID='x'"):
    distributed.plan(DistConfig(), environ={"JAXTRAIN_PROCESS_ID": "x"}, detect=no_cluster)
  with pytest.raises(ConfigError, match=r"^dist.process_id=2: must be in \[0, dist.num_processes=2\)"):
    distributed.plan(DistConfig(), environ={"JAXTRAIN_COORDINATOR": "h:1", "JAXTRAIN_NUM_PROCESSES": "2",
                                       "JAXTRAIN_PROCESS_ID": "2"}, detect=no_cluster)


@pytest.mark.parametrize("override, message", [
    ("dist.coordinator=nohostport", "dist.coordinator='nohostport': expected host:port"),
    ("dist.num_processes=0", "dist.num_processes=0: must be a positive number"),
    ("dist.timeout_secs=0", "dist.timeout_secs=0: must be a positive number"),
])
def test_bad_dist_values_fail_at_validation(override, message):
  import jaxtrain

  with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
    jaxtrain.compose([override])


def test_one_process_run_starts_nothing():
  """The in-process runs of the other tests: no runtime, no prefix."""
  assert distributed.initialize(DistConfig(auto=False)) is False
