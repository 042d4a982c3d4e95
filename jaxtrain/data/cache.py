"""Where generated and converted datasets are kept between runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

CACHE_ENV = "JAXTRAIN_CACHE_DIR"


def data_cache_dir() -> Path:
  """$JAXTRAIN_CACHE_DIR, else <$XDG_CACHE_HOME or ~/.cache>/jaxtrain."""
  if os.environ.get(CACHE_ENV):
    return Path(os.environ[CACHE_ENV])
  return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxtrain"


def write_npz_atomically(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes an uncompressed NPZ under a temporary name, then renames it: a reader
  never sees half a file, and concurrent writers of the same content do no harm."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
    np.savez(tmp, **arrays)
  os.replace(tmp.name, path)
