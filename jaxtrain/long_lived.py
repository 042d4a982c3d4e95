"""Python's cyclic garbage collector and the objects that live as long as the process.

Importing jax, flax, optax, orbax, grain and hydra creates ~200k objects (modules,
classes, functions, caches) that never become garbage. Left to itself, the collector
scans all of them in every full collection: on a warm start of the default task on a
2-core VM, three full collections while they were imported and one while the model was
traced took ~0.23 s, and all collections ~0.4 s of a ~3 s process. One full collection
during training costs ~0.1 s.

- `imports_uncollected()` (jaxtrain/__init__.py): no collection while the package
  imports; what exists afterwards is frozen (`gc.freeze`: left out of collections).
- `frozen_for_run()` (`jaxtrain.run`): what exists when a run starts is frozen too, and
  everything is unfrozen when the run ends (`gc.unfreeze`), so nothing stays out of the
  collector's reach for longer than a run: cyclic garbage among those objects is
  collected by the next full collection after it, as usual.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def imports_uncollected() -> Iterator[None]:
  """No cyclic collection while the block runs; then every tracked object is frozen."""
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    gc.freeze()
    if was_enabled:
      gc.enable()


@contextlib.contextmanager
def frozen_for_run() -> Iterator[None]:
  """Objects that exist when the block starts are left out of collections until it ends."""
  gc.freeze()
  try:
    yield
  finally:
    gc.unfreeze()
