#!/usr/bin/env bash
# Run jaxtrain as N processes on this machine, the way a cluster runs it on N hosts.
#
#   launch/local_multiprocess.sh N [--cpu-devices M] [--dry-run] [hydra overrides...]
#
# Every process gets JAXTRAIN_COORDINATOR=127.0.0.1:<free port>,
# JAXTRAIN_NUM_PROCESSES=N and JAXTRAIN_PROCESS_ID=0..N-1, and they all write to
# one run.dir (added when the overrides name none). --cpu-devices M gives each
# process M fake CPU devices, so N*M devices in all:
#   launch/local_multiprocess.sh 2 --cpu-devices 2 trainer.steps=200
# The script waits for all; when one fails the others are stopped, and its exit
# code is the first failure's (75 = preempted: requeue, see README).
#
# --dry-run (or JAXTRAIN_DRY_RUN=1) prints the commands instead of running them.
# JAXTRAIN_COORDINATOR_PORT picks the port; PYTHON the interpreter.
set -euo pipefail

usage() { echo "usage: launch/local_multiprocess.sh N [--cpu-devices M] [--dry-run] [overrides...]" >&2; exit 2; }

nprocs="${1:-}"
[[ "$nprocs" =~ ^[1-9][0-9]*$ ]] || usage
shift
dry_run="${JAXTRAIN_DRY_RUN:-0}"
devices=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-devices)
      devices="${2:?--cpu-devices needs a number}"
      [[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "launch/local_multiprocess.sh: --cpu-devices wants a positive integer, got '$devices'" >&2; exit 2; }
      shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) break ;;
  esac
done

python="${PYTHON:-python3}"
port="${JAXTRAIN_COORDINATOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

# One run directory for all processes: each would otherwise stamp its own.
root=outputs name=default has_dir=0
for arg in "$@"; do
  case "$arg" in
    run.dir=*) has_dir=1 ;;
    run.root=*) root="${arg#run.root=}" ;;
    run.name=*) name="${arg#run.name=}" ;;
  esac
done
if [[ $has_dir == 0 ]]; then
  name="$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '-')"
  set -- "$@" "run.dir=$root/runs/run_$(date +%Y%m%d-%H%M%S)_${name}"
fi

env_for() {  # the environment of process $1, as NAME=value words
  local vars=("JAXTRAIN_COORDINATOR=127.0.0.1:$port" "JAXTRAIN_NUM_PROCESSES=$nprocs" "JAXTRAIN_PROCESS_ID=$1")
  if [[ -n "$devices" ]]; then
    # Replaces any device count already in XLA_FLAGS (a test runner's, say).
    local flags
    flags="$(printf '%s' "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g; s/^ +//')"
    vars+=("JAX_PLATFORMS=cpu" "XLA_FLAGS=${flags:+$flags }--xla_force_host_platform_device_count=$devices")
  fi
  printf '%s\n' "${vars[@]}"
}

if [[ "$dry_run" == 1 ]]; then
  for ((i = 0; i < nprocs; i++)); do
    mapfile -t vars < <(env_for "$i")
    printf '%q ' env "${vars[@]}" "$python" -m jaxtrain.main "$@"
    echo
  done
  exit 0
fi

declare -A index_of=()  # pid -> process id
stop_all() {  # $1: signal
  for pid in "${!index_of[@]}"; do kill -s "$1" "$pid" 2>/dev/null || true; done
}
# Ctrl-C and SIGTERM reach every process as SIGTERM, which JAX's preemption
# sync point turns into one common step to checkpoint before exiting with 75.
# (setsid: a terminal's Ctrl-C would otherwise reach each process on its own.)
trap 'stop_all TERM' TERM INT

for ((i = 0; i < nprocs; i++)); do
  mapfile -t vars < <(env_for "$i")
  setsid env "${vars[@]}" "$python" -m jaxtrain.main "$@" &
  index_of[$!]=$i
done

status=0
while ((${#index_of[@]} > 0)); do
  code=0 done_pid=""
  wait -n -p done_pid || code=$?
  if [[ -z "${done_pid:-}" ]]; then
    ((code == 127)) && break  # no process left to wait for
    continue  # a trapped signal interrupted the wait
  fi
  index="${index_of[$done_pid]:-?}"
  unset "index_of[$done_pid]"
  if ((code != 0 && status == 0)); then
    status=$code
    if ((code != 75)); then  # 75: all processes stop at the same step by themselves
      echo "launch/local_multiprocess.sh: process $index exited with $code; stopping the others" >&2
      stop_all KILL
    fi
  fi
done
exit "$status"
