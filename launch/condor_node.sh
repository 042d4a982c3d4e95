#!/usr/bin/env bash
# One machine of a launch/condor.sub job: Condor's node number becomes
# JAXTRAIN_PROCESS_ID, and node 0's address becomes everyone's JAXTRAIN_COORDINATOR.
#
#   launch/condor_node.sh NODE NUM_NODES RUN_DIR CLUSTER [hydra overrides...]
#
# Node 0 writes "<its host>:<port>" to RUN_DIR/.coordinator-<CLUSTER> (a shared
# filesystem); the other nodes wait for a copy written after they started, at
# most JAXTRAIN_RENDEZVOUS_SECS (default 600), so a file left by an earlier
# attempt of the same job is never used.
#
# JAXTRAIN_DRY_RUN=1 prints the environment and the command instead of running
# it (node 0 then writes nothing). JAXTRAIN_COORDINATOR_PORT picks the port;
# PYTHON the interpreter.
set -euo pipefail

[[ $# -ge 4 ]] || { echo "usage: launch/condor_node.sh NODE NUM_NODES RUN_DIR CLUSTER [overrides...]" >&2; exit 2; }
node="$1" count="$2" run_dir="$3" cluster="$4"
shift 4
python="${PYTHON:-python3}"
dry_run="${JAXTRAIN_DRY_RUN:-0}"
rendezvous="$run_dir/.coordinator-$cluster"
started="$(date +%s)"
slack=120  # nodes of one attempt start within this many seconds of each other

if [[ "$node" == 0 ]]; then
  port="${JAXTRAIN_COORDINATOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}"
  coordinator="$(hostname -f):$port"
  if [[ "$dry_run" != 1 ]]; then
    mkdir -p "$run_dir"
    echo "$coordinator" > "$rendezvous.tmp.$$"
    mv -f "$rendezvous.tmp.$$" "$rendezvous"  # readers never see half a line
  fi
else
  deadline=$((started + ${JAXTRAIN_RENDEZVOUS_SECS:-600}))
  until [[ -f "$rendezvous" ]] && (($(stat -c %Y "$rendezvous") >= started - slack)); do
    if (($(date +%s) > deadline)); then
      echo "launch/condor_node.sh: node 0 did not write $rendezvous within ${JAXTRAIN_RENDEZVOUS_SECS:-600} s" >&2
      exit 2
    fi
    sleep 2
  done
  coordinator="$(cat "$rendezvous")"
fi

export JAXTRAIN_COORDINATOR="$coordinator" JAXTRAIN_NUM_PROCESSES="$count" JAXTRAIN_PROCESS_ID="$node"
cmd=("$python" -m jaxtrain.main "run.dir=$run_dir" "$@")
if [[ "$dry_run" == 1 ]]; then
  env | grep -E '^JAXTRAIN_(COORDINATOR|NUM_PROCESSES|PROCESS_ID)=' | sort
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
