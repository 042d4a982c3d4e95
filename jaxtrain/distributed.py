"""Several processes, one run: JAX's distributed runtime, started before any jax computation.

Each of coordinator ("host:port" of process 0), process count and process id
comes from the first of:
  1. the config: dist.coordinator, dist.num_processes, dist.process_id;
  2. the environment: JAXTRAIN_COORDINATOR, JAXTRAIN_NUM_PROCESSES,
     JAXTRAIN_PROCESS_ID (what the launch/ scripts set);
  3. the cluster, with dist.auto: jax's own detection of an srun step, an
     Open MPI job, a Cloud TPU VM pod slice or a Kubernetes indexed Job.
One process (the default everywhere else) starts nothing.

How failures end, instead of hanging:
  - peers never arrive: jax would abort with a C++ stack trace after its own
    timeout; a watchdog prints one line and exits with 2 at dist.timeout_secs;
  - a peer dies or hangs later: jax's coordination service misses its
    heartbeats (or sees its connection close) and terminates the others
    (exit 134, "the JAX distributed service detected fatal errors") within
    dist.heartbeat_timeout_secs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from jaxtrain.errors import ConfigError

log = logging.getLogger("jaxtrain")

ENV_COORDINATOR = "JAXTRAIN_COORDINATOR"
ENV_NUM_PROCESSES = "JAXTRAIN_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXTRAIN_PROCESS_ID"
# jax's own start-up timeout is set this much later than the watchdog's, so
# that a missing peer is reported by the one-line message, not by jax's abort.
_JAX_TIMEOUT_GRACE_SECS = 30
PEERS_MISSING_EXIT_CODE = ConfigError.exit_code


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to pass to jax.distributed.initialize; None values are left to jax's cluster detection."""

  coordinator: str | None
  num_processes: int | None
  process_id: int | None
  local_device_ids: list[int] | None
  source: str  # where the values came from, for the log line


def detect_cluster() -> tuple[str, int] | None:
  """(name, process count) of the cluster jax's auto-detection would use, or None.

  Same order and environments as jax.distributed.initialize() without
  arguments; a detector that fails (a Kubernetes pod without API access, say)
  counts as no cluster.
  """
  try:
    from jax._src import clusters  # the detectors jax.distributed.initialize() runs
    detectors = [env for env in clusters.ClusterEnv._cluster_types if not env.opt_in_only_method]
  except (ImportError, AttributeError):  # moved in a later jax: explicit values still work
    return None
  for env in detectors:
    try:
      if env.is_env_present():
        return env.name or env.__name__, int(env.get_process_count())
    except Exception as err:  # noqa: BLE001 - a broken detector must not stop a one-process run
      log.warning("dist.auto: %s detection failed (%s); running as one process", env.__name__, err)
      return None
  return None


def plan(dist: Any, environ: Mapping[str, str] | None = None, detect=detect_cluster) -> Plan | None:
  """The multi-process set-up for config `dist` (a DistConfig), or None for one process.

  Raises ConfigError when the values given cannot make a multi-process run.
  """
  environ = os.environ if environ is None else environ
  coordinator = dist.coordinator or environ.get(ENV_COORDINATOR) or None
  num = dist.num_processes if dist.num_processes is not None else _env_int(environ, ENV_NUM_PROCESSES)
  pid = dist.process_id if dist.process_id is not None else _env_int(environ, ENV_PROCESS_ID)
  ids = list(dist.local_device_ids) if dist.local_device_ids is not None else None
  if num == 1 and coordinator is None:
    return None
  if num == 1:
    # One process with the runtime on: the collectives (gloo on CPU) of a
    # multi-process run, whose results it then matches bit for bit.
    pid = 0 if pid is None else pid
  cluster = detect() if dist.auto and None in (coordinator, num, pid) else None
  if cluster is not None and cluster[1] > 1:
    return Plan(coordinator, num, pid, ids, source=f"{cluster[0]} ({cluster[1]} processes)")
  if num is None and coordinator is None and pid is None:
    return None
  for key, env, value in (("dist.coordinator", ENV_COORDINATOR, coordinator),
                          ("dist.num_processes", ENV_NUM_PROCESSES, num),
                          ("dist.process_id", ENV_PROCESS_ID, pid)):
    if value is None:
      raise ConfigError(f"{key}: needed for a multi-process run (or set {env}); "
                        "no SLURM/MPI/TPU/Kubernetes cluster was detected to fill it in")
  if not 0 <= pid < num:
    raise ConfigError(f"dist.process_id={pid}: must be in [0, dist.num_processes={num})")
  return Plan(coordinator, num, pid, ids, source="dist.* / JAXTRAIN_*")


def initialize(dist: Any) -> bool:
  """Starts jax.distributed when the run has several processes (or a coordinator); True for several.

  Call it before any jax computation. Idempotent: a second call (another run
  in the same Python process) changes nothing. Raises ConfigError (one line)
  when the runtime cannot start.
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  setup = plan(dist)
  if setup is None:
    return False
  label = f"p{setup.process_id}" if setup.process_id is not None else "this process"
  kwargs = {
      "coordinator_address": setup.coordinator,
      "num_processes": setup.num_processes,
      "process_id": setup.process_id,
      "local_device_ids": setup.local_device_ids,
      "initialization_timeout": dist.timeout_secs + _JAX_TIMEOUT_GRACE_SECS,
      "heartbeat_timeout_seconds": dist.heartbeat_timeout_secs,
      # A process that ends waits this long for the others at jax's shutdown barrier.
      "shutdown_timeout_seconds": dist.heartbeat_timeout_secs,
  }
  accepted = inspect.signature(jax.distributed.initialize).parameters
  kwargs = {k: v for k, v in kwargs.items() if k in accepted}
  arrived = threading.Event()
  watchdog = threading.Thread(target=_exit_unless_arrived, daemon=True, name="jaxtrain-dist-watchdog",
                              args=(arrived, dist.timeout_secs, label, setup))
  watchdog.start()
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as err:  # jax used before, or the coordinator's port taken, ...
    raise ConfigError(f"dist: cannot start the distributed runtime (coordinator "
                      f"{setup.coordinator or 'detected'}): {str(err).splitlines()[0]}") from None
  except ValueError as err:  # jax's cluster detection left a value unset
    raise ConfigError(f"dist: {str(err).splitlines()[0]}") from None
  finally:
    arrived.set()
  if jax.process_count() > 1:
    _prefix_log_records(jax.process_index())
  log.info("process %d of %d (%s), coordinator %s, %d local / %d global devices", jax.process_index(),
           jax.process_count(), setup.source, setup.coordinator or "detected", jax.local_device_count(),
           jax.device_count())
  return jax.process_count() > 1


def require_shared_run_dir(run_dir: Path, save_artifacts: bool) -> None:
  """With several processes, checks that all of them write to the same run directory.

  Also a barrier: no process writes into the run directory before every one
  has decided whether to resume from it.
  """
  if jax.process_count() == 1:
    return
  if not save_artifacts:
    raise ConfigError("logging.save_artifacts=false: not supported with several processes "
                      "(their checkpoints need one shared run.dir)")
  from jax.experimental import multihost_utils

  digest = np.frombuffer(hashlib.sha256(str(run_dir.absolute()).encode()).digest(), np.uint8)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  if not (digests == digests[0]).all():
    raise ConfigError(f"run.dir: the {jax.process_count()} processes chose different run directories "
                      f"(this one: {run_dir}); set run.dir to one path every process can reach")


def _exit_unless_arrived(arrived: threading.Event, timeout: float, label: str, setup: Plan) -> None:
  """Watchdog: one line and exit 2, where jax would abort with a stack trace later."""
  if arrived.wait(timeout):
    return
  print(f"jaxtrain: error: [{label}] dist: not all {setup.num_processes or 'expected'} processes reached "
        f"the coordinator {setup.coordinator or '(detected)'} within dist.timeout_secs={timeout:g}; "
        "check dist.coordinator / dist.num_processes and that every process was started",
        file=sys.stderr, flush=True)
  os._exit(PEERS_MISSING_EXIT_CODE)  # the main thread is blocked inside jax; nothing else can end it


def _prefix_log_records(index: int) -> None:
  """Every log line of this process starts with [p<index>], whatever handler prints it."""
  factory = logging.getLogRecordFactory()
  if getattr(factory, "jaxtrain_prefix", None) is not None:
    return

  def prefixed(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = factory(*args, **kwargs)
    record.msg = f"[p{index}] {record.msg}"
    return record

  prefixed.jaxtrain_prefix = index  # type: ignore[attr-defined]
  logging.setLogRecordFactory(prefixed)


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name, "").strip()
  if not value:
    return None
  if not value.isdigit():
    raise ConfigError(f"{name}={value!r}: expected a non-negative integer")
  return int(value)
