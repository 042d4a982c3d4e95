"""`python -m jaxtrain.average <run_dir> --last K`: average the params of a run's
K newest checkpoints into an exported model.

Averaging the weights of the last few checkpoints (Polyak/checkpoint averaging)
often evaluates better than any single one. The export is an Orbax checkpoint
holding `params` (and `ema_params` when the run kept an EMA) plus a JSON note
of which steps went in.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxtrain.checkpoint import STATE, find_checkpoint_dir
from jaxtrain.errors import ConfigError


def average_trees(trees: Sequence[Any]) -> Any:
  """Leafwise mean (accumulated in float64, returned in each leaf's dtype)."""
  def mean(*leaves):
    stacked = np.stack([np.asarray(leaf, np.float64) for leaf in leaves])
    return stacked.mean(axis=0).astype(np.asarray(leaves[0]).dtype)
  return jax.tree.map(mean, *trees)


def load_states(checkpoints: Path, steps: Sequence[int]) -> list[dict[str, Any]]:
  """The saved train states of `steps`, as plain host trees (no target needed)."""
  manager = ocp.CheckpointManager(checkpoints, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_names=(STATE,))
  try:
    states = []
    for step in steps:
      restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore()}))
      states.append(restored[STATE])
    return states
  finally:
    manager.close()


def average_checkpoints(run_dir: Path, last: int, out: Path | None = None) -> Path:
  """Writes the average of the `last` newest checkpoints; returns the export directory."""
  checkpoints = find_checkpoint_dir(run_dir)
  available = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()
                     and (p / "_CHECKPOINT_METADATA").exists())
  if last < 1:
    raise ConfigError(f"--last {last}: must be at least 1")
  if len(available) < last:
    raise ConfigError(f"--last {last}: {checkpoints} holds only {len(available)} checkpoints "
                      f"(steps {available}); raise checkpoint.keep to keep more")
  steps = available[-last:]
  states = load_states(checkpoints, steps)
  export = {"params": average_trees([s["params"] for s in states])}
  if all(s.get("ema_params") is not None for s in states):
    export["ema_params"] = average_trees([s["ema_params"] for s in states])
  out = Path(out or Path(run_dir) / "exports" / f"average_last{last}").absolute()
  if out.exists():
    raise ConfigError(f"{out} already exists; remove it or pass --out")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(out / "model", export)
  checkpointer.wait_until_finished()
  (out / "averaged.json").write_text(json.dumps({"steps": steps, "source": str(checkpoints)}, indent=2) + "\n")
  return out


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxtrain.average", description=__doc__.splitlines()[0])
  parser.add_argument("run_dir", type=Path, help="a run directory (or its checkpoints/ folder)")
  parser.add_argument("--last", type=int, default=2, help="how many of the newest checkpoints to average")
  parser.add_argument("--out", type=Path, default=None, help="export directory (default <run_dir>/exports/...)")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's read-only notices
  try:
    out = average_checkpoints(args.run_dir, args.last, args.out)
  except ConfigError as err:
    print(f"jaxtrain.average: error: {err}", file=sys.stderr)
    return ConfigError.exit_code
  print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
