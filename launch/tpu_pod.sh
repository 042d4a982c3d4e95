#!/usr/bin/env bash
# jaxtrain on a Cloud TPU VM pod slice: the same command on every host at once.
#
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE run.dir=/mnt/shared/runs/mine [hydra overrides...]
#
# Runs `python3 -m jaxtrain.main ...` on all workers through
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all --command ...
# Each host is one process; jax finds the coordinator, the process count and
# this host's worker id from the TPU VM itself (dist.auto, the default), so no
# JAXTRAIN_* variable is needed. run.dir must be on storage every host mounts
# (a Filestore/NFS share, or a gcsfuse-mounted bucket): checkpoints are written
# by all hosts. Exit 75 (preempted) from any host means: run the same command again.
#
# JAXTRAIN_REMOTE_DIR: where the repository sits on the workers (default ~/jaxtrain);
# TPU_PROJECT: the Google Cloud project (default: gcloud's); PYTHON: the interpreter there.
# --dry-run (or JAXTRAIN_DRY_RUN=1) prints the gcloud command instead of running it.
set -euo pipefail

dry_run="${JAXTRAIN_DRY_RUN:-0}"
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
[[ $# -ge 2 ]] || { echo "usage: launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE run.dir=<shared path> [overrides...]" >&2; exit 2; }
tpu="$1" zone="$2"
shift 2
has_dir=0
for arg in "$@"; do [[ "$arg" == run.dir=* ]] && has_dir=1; done
if [[ $has_dir == 0 ]]; then
  echo "launch/tpu_pod.sh: give run.dir=<path every host mounts>; each host would otherwise write its own" >&2
  exit 2
fi

remote_dir="${JAXTRAIN_REMOTE_DIR:-~/jaxtrain}"
# The remote command, quoted once for the workers' shell (~ left for it to expand).
remote="cd $remote_dir && $(printf '%q ' "${PYTHON:-python3}" -m jaxtrain.main "$@")"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
if [[ -n "${TPU_PROJECT:-}" ]]; then cmd+=(--project "$TPU_PROJECT"); fi

if [[ "$dry_run" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
