"""summary.json and the params fingerprint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np


def host_array(x: jax.Array) -> np.ndarray:
  """The full value of a (possibly sharded, possibly multi-process) array on this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def params_fingerprint(params: Any) -> str:
  """sha256 over every param's path, dtype, shape and bytes, in tree order."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    value = np.ascontiguousarray(host_array(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{value.dtype}{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def write_summary(path: Path, summary: dict[str, Any]) -> None:
  """Writes summary.json atomically (a reader never sees half a file)."""
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
  tmp.replace(path)
