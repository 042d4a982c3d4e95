"""JAX's persistent compilation cache, on by default, so a second run of a config skips XLA compilation.

`trainer.compilation_cache_dir` (configs/config.yaml sets it to `${env.cache_dir}`, so env
profiles place it):
- null (default): `$XDG_CACHE_HOME/jaxtrain/jax_cache`, or `~/.cache/jaxtrain/jax_cache`;
- a path: that folder;
- "" / false / off / no / none / 0: off (JAX's own cache is switched off for the process too).

Only XLA's compile is cached: tracing and lowering still run on every start, so the
saving is the compile time of the train and eval steps (about 1-2 s on a 2-core CPU for
the default task, far more for large models on accelerators).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

log = logging.getLogger("jaxtrain")

# Compiles shorter than this are not written: the tiniest eager ops (a cast, an add: a few ms)
# would fill the cache with files that cost about as much to read as to compile. At 0.1 s the
# default task's eval step and checkpoint snapshot copies (20-80 ms each on a 2-core CPU) were
# compiled again at every start: ~0.1 s of a 2.5 s warm start.
MIN_COMPILE_SECS = 0.01
_OFF_VALUES = ("", "false", "off", "no", "0", "none")


def default_cache_dir() -> Path:
  """<user cache dir>/jaxtrain/jax_cache: $XDG_CACHE_HOME if set, else ~/.cache."""
  root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(root) / "jaxtrain" / "jax_cache"


def resolve_cache_dir(setting: Any) -> Path | None:
  """The folder `trainer.compilation_cache_dir` asks for: None means the cache is off."""
  if setting is None:
    return default_cache_dir()
  if setting is False or str(setting).strip().lower() in _OFF_VALUES:
    return None
  return Path(os.path.expanduser(str(setting)))


def enable_compilation_cache(setting: Any, announce: bool = True) -> Path | None:
  """Points JAX's persistent compilation cache at `setting` (see the module doc); returns the folder.

  Call before the first compile. Safe to call again with another folder (in-memory
  state of the cache is reset), as one process running several configs does.
  """
  cache_dir = resolve_cache_dir(setting)
  if cache_dir is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  cache_dir = cache_dir.absolute()
  cache_dir.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  # 0 = no size floor: the default task's executables are small.
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  if jax.config.jax_compilation_cache_dir != str(cache_dir):
    # JAX opens its cache once per process; forget the old one so the new folder is used.
    jax_cache.reset_cache()
    jax_cache.set_cache_dir(str(cache_dir))
  if announce:
    log.info("compilation cache: %s", cache_dir)
  return cache_dir
