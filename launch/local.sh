#!/usr/bin/env bash
# Run jaxtrain on this machine.
#
#   launch/local.sh [--cpu-devices N] [hydra overrides...]
#
# --cpu-devices N splits the host CPU into N XLA devices, so mesh settings
# (mesh.data, mesh.fsdp) can be tried on a laptop before a cluster run:
#   launch/local.sh --cpu-devices 8 mesh.data=4 mesh.fsdp=2 trainer.steps=200
set -euo pipefail

if [[ "${1:-}" == "--cpu-devices" ]]; then
  devices="${2:?--cpu-devices needs a number}"
  [[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "launch/local.sh: --cpu-devices wants a positive integer, got '$devices'" >&2; exit 2; }
  shift 2
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices}"
fi

exec "${PYTHON:-python3}" -m jaxtrain.main "$@"
