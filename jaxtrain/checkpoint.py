"""Orbax checkpoint policy: async saves of state + data iterator + bookkeeping,
keep the last K and the best by a monitored metric, resume from the newest."""

from __future__ import annotations

import concurrent.futures
import logging
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxtrain.config.schema import CheckpointConfig
from jaxtrain.core.sharding import path_name
from jaxtrain.errors import ConfigError, IncompatibleCheckpoint
from jaxtrain.snapshot import FrozenIteratorState, Snapshots, use_snapshots

log = logging.getLogger(__name__)

STATE, DATA, META = "state", "data", "meta"


def _preservation(cfg: CheckpointConfig) -> Any:
  """Last `keep` checkpoints, plus the best one by `monitor`.

  Orbax's plain best_fn + max_to_keep may delete the newest checkpoint as
  "not best", sending a resume back in time; combining LatestN with BestN
  never does.
  """
  keep_latest = policies.LatestN(n=max(1, cfg.keep))
  if not cfg.monitor:
    return keep_latest
  monitor = cfg.monitor
  best = policies.BestN(get_metric_fn=lambda metrics: metrics[monitor], reverse=cfg.mode == "min", n=1,
                        keep_checkpoints_without_metrics=False)
  return policies.AnyPreservationPolicy([keep_latest, best])


class Checkpointer:
  """A CheckpointManager over `directory` with the run's retention policy.

  With async saves and `checkpoint.snapshot` on (jaxtrain/snapshot.py), a save
  copies the state on its devices and hands the Orbax save to one checkpoint
  thread; every later use of the manager first waits for that thread, so the
  manager is never used from two threads at once.
  """

  def __init__(self, directory: Path, cfg: CheckpointConfig, read_only: bool = False):
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=cfg.async_save,
        preservation_policy=_preservation(cfg),
        create=not read_only,
        read_only=read_only,
    )
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=(STATE, DATA, META))
    self._snapshot_mode = cfg.snapshot if cfg.async_save and not read_only else "none"
    self._snapshots: bool | None = None  # decided at the first save, when the state is known
    self._snapshot_buffers = Snapshots()
    self._thread: concurrent.futures.ThreadPoolExecutor | None = None
    self._pending: concurrent.futures.Future | None = None

  def prepare(self, state: Any) -> None:
    """Settles how `state` will be saved and compiles the snapshot copies now, before the
    loop's clock starts, instead of at the first two saves."""
    if self._snapshots is None:
      self._snapshots = use_snapshots(self._snapshot_mode, state)
    if self._snapshots:
      self._snapshot_buffers.prepare(state)

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> bool:
    """Starts an async save; returns once the device arrays are safe to donate.

    A step that is already on disk is left as it is (a finished run that is
    started again re-runs its final actions), and False is returned.
    """
    self.prepare(state)  # a no-op when the run prepared it before the loop
    self._finish_pending()  # a save handed to the thread has its step in the manager's list from here on
    if step in self.manager.all_steps():
      return False
    if self._snapshots:
      return self._save_snapshot(step, state, data_iterator, meta, metrics)
    return self._save_now(step, state, data_iterator, meta, metrics)

  def _save_now(self, step: int, state: Any, data_iterator: Any, meta: dict[str, Any],
                metrics: dict[str, float] | None) -> bool:
    args = ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        DATA: grain.checkpoint.CheckpointSave(data_iterator),
        META: ocp.args.JsonSave(meta),
    })
    return self.manager.save(step, args=args, metrics=metrics, force=True)

  def _save_snapshot(self, step: int, state: Any, data_iterator: Any, meta: dict[str, Any],
                     metrics: dict[str, float] | None) -> bool:
    """Copies the state on its devices and queues the Orbax save of the copy."""
    # As with Orbax alone, the previous checkpoint is committed before a new one
    # starts: a resume never goes back two checkpoints, and a loop that saves
    # faster than the disk writes waits here instead of piling up copies.
    self.manager.wait_until_finished()
    # The previous snapshot's save has finished, so its buffers may be reused.
    snapshot = self._snapshot_buffers.take(state)
    position = FrozenIteratorState(data_iterator)  # the iterator moves on with the next batch
    if self._thread is None:
      self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxtrain-checkpoint")
    self._pending = self._thread.submit(self._save_now, step, snapshot, position, dict(meta),
                                        dict(metrics) if metrics else None)
    return True

  def _finish_pending(self) -> None:
    """Waits for the queued save to be handed to Orbax; re-raises its error, if any."""
    pending, self._pending = self._pending, None
    if pending is not None:
      pending.result()

  def latest_step(self) -> int | None:
    self._finish_pending()
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    self._finish_pending()
    return list(self.manager.all_steps())

  def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict[str, Any]]:
    """Restores state onto the shardings in `abstract_state` (ShapeDtypeStructs),
    and the data iterator in place. Returns `(state, meta)`."""
    self._finish_pending()
    args = ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state),
        DATA: grain.checkpoint.CheckpointRestore(data_iterator),
        META: ocp.args.JsonRestore(),
    })
    try:
      restored = self.manager.restore(step, args=args)
    except IncompatibleCheckpoint:
      raise
    except Exception as err:  # orbax raises many types for unreadable checkpoints
      mismatch = self.param_mismatch(step, abstract_state)
      if mismatch:
        raise IncompatibleCheckpoint(f"checkpoint {self.directory / str(step)} does not fit this config "
                                     f"({mismatch}); resume with the config it was saved with, or start a new "
                                     "run.dir") from err
      raise ConfigError(f"checkpoint {self.directory / str(step)} cannot be restored: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    return restored[STATE], restored[META]

  def param_mismatch(self, step: int, abstract_state: Any) -> str | None:
    """The first param whose saved shape differs from this config's (or that only one
    side has), from the checkpoint's metadata; None when they agree or it is unreadable."""
    try:
      saved = self.manager.item_metadata(step)[STATE].tree["params"]
    except Exception:  # no readable metadata: damage, not a config change
      return None
    shapes = lambda tree: {path_name(path): tuple(leaf.shape)
                           for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    saved_shapes, wanted = shapes(saved), shapes(abstract_state.params)
    for name in sorted(set(saved_shapes) | set(wanted)):
      if saved_shapes.get(name) != wanted.get(name):
        return (f"param {name}: saved {saved_shapes.get(name, 'absent')}, "
                f"this config {wanted.get(name, 'absent')}")
    return None

  def wait(self) -> None:
    """Blocks until pending async saves are on disk."""
    self._finish_pending()
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves (an error in one is raised here) and releases the manager."""
    try:
      self._finish_pending()
    finally:
      if self._thread is not None:
        self._thread.shutdown(wait=True)
      self._snapshot_buffers.release()
      self.manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restoring onto a mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


def find_checkpoint_dir(path: Path) -> Path:
  """A run directory or its checkpoints/ folder -> the checkpoints folder."""
  path = Path(path)
  if (path / "checkpoints").is_dir():
    return path / "checkpoints"
  if path.is_dir():
    return path
  raise ConfigError(f"run.resume={str(path)!r}: no such run directory or checkpoints folder")
