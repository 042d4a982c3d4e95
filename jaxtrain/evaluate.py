"""`python -m jaxtrain.evaluate <run_dir> [--step N|best|last] [--split val|train] [overrides...]`.

Evaluates a checkpoint of a finished (or running) run with the evaluators of
its config, or others given as overrides (`eval.evaluators=[{name:recall_at_k,k:[1,10]}]`).
The run's config is rebuilt exactly as it trained, the checkpoint is restored
read-only onto the same mesh, and the same compiled computations run, so the
numbers match what the run logged for that step. Results are printed as a
table and written to `<run_dir>/evaluations/step_<N>.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from jaxtrain.errors import ConfigError

CONFIG_RECORD = Path(".hydra") / "config.yaml"
STEP_CHOICES = ("best", "last")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What one standalone evaluation produced."""

  run_dir: Path
  step: int
  split: str
  metrics: dict[str, float]
  path: Path  # the JSON record


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
  """The config the run trained with (.hydra/config.yaml), with key=value `overrides` applied."""
  from hydra.core.override_parser.overrides_parser import OverridesParser
  from hydra.errors import OverrideParseException

  record = run_dir / CONFIG_RECORD
  if not record.is_file():
    raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG_RECORD})")
  cfg = OmegaConf.load(record)
  try:
    parsed = OverridesParser.create().parse_overrides(list(overrides))
  except OverrideParseException as err:
    raise ConfigError(f"cannot parse override: {str(err).strip().splitlines()[0]}") from None
  for override in parsed:
    if override.is_delete() or override.is_sweep_override() or "/" in override.key_or_group:
      raise ConfigError(f"{override.input_line}: only key=value overrides apply to a finished run's config "
                        "(no config groups, deletions or sweeps)")
    OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False,
                     force_add=override.is_add() or override.is_force_add())
  return cfg


def resolve_step(reader: Any, step: str) -> int:
  """The checkpoint step for `--step`: a number, `last`, or `best` (the bookkeeping's best step)."""
  import orbax.checkpoint as ocp

  from jaxtrain.checkpoint import META

  steps = sorted(reader.all_steps())
  if not steps:
    raise ConfigError(f"{reader.directory}: holds no finished checkpoint")
  if step == "last":
    return steps[-1]
  if step == "best":
    meta = reader.manager.restore(steps[-1], args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    best = meta.get("best_step")
    if best is None:
      raise ConfigError("--step best: the run recorded no best step (checkpoint.monitor unset or never evaluated)")
    if best not in steps:
      raise ConfigError(f"--step best: best step {best} is no longer on disk; checkpoints: {steps}")
    return int(best)
  if not step.isdigit():
    raise ConfigError(f"--step={step!r}: expected a step number, best or last")
  if int(step) not in steps:
    raise ConfigError(f"--step={step}: no such checkpoint in {reader.directory}; checkpoints: {steps}")
  return int(step)


def _restore_state(reader: Any, step: int, engine: Any) -> Any:
  """The train state of checkpoint `step`, on the engine's shardings (the data iterator is not read)."""
  import jax
  import orbax.checkpoint as ocp

  from jaxtrain.checkpoint import STATE, abstract_with_shardings

  abstract = abstract_with_shardings(jax.eval_shape(lambda: engine.state), engine.state_shardings)
  try:
    restored = reader.manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract)}))
  except Exception as err:  # orbax raises many types for unreadable or mismatched checkpoints
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    raise ConfigError(f"checkpoint {reader.directory / str(step)} cannot be restored: "
                      f"{type(err).__name__}: {first}") from None
  return restored[STATE]


def _split_context(engine: Any, spec: Any, split: str) -> tuple[Any, list[Any]]:
  """The evaluation context and evaluators for `split` (val: the very ones the run used)."""
  if split == "val":
    return engine.eval_context, engine.evaluators
  import jax

  from jaxtrain.data import pipeline
  from jaxtrain.data.sources import concatenated, load_datasets
  from jaxtrain.evaluators.base import build_evaluators

  source = concatenated([getattr(dataset, split) for dataset in load_datasets(spec.config.data)])
  context = engine.eval_context.for_batches(
      pipeline.eval_dataset(source, spec.config.data, multiple_of=jax.local_device_count()))
  return context, build_evaluators(spec.config.eval.evaluators, context)[0]


def evaluate_run(run_dir: str | Path, step: str = "last", split: str = "val",
                 overrides: Sequence[str] = ()) -> Evaluation:
  """Restores checkpoint `step` of `run_dir`, runs the configured evaluators on `split`, writes the record."""
  import jax

  from jaxtrain.actions.evaluation import evaluate_with_ema
  from jaxtrain.build import build
  from jaxtrain.checkpoint import Checkpointer
  from jaxtrain.config.compose import register
  from jaxtrain.config.validate import validate
  from jaxtrain.evaluators.base import run_evaluators
  from jaxtrain.track import rundir

  run_dir = Path(run_dir)
  cfg = load_run_config(run_dir, overrides)
  register()  # the resolvers a recorded config may still name
  spec = validate(cfg)
  checkpoints = run_dir / rundir.CHECKPOINTS_DIR
  if not checkpoints.is_dir():
    raise ConfigError(f"{run_dir}: no {rundir.CHECKPOINTS_DIR}/ folder")
  reader = Checkpointer(checkpoints, spec.config.checkpoint, read_only=True)
  try:
    chosen = resolve_step(reader, step)
    engine = build(spec)
    state = _restore_state(reader, chosen, engine)
  finally:
    reader.close()
  context, evaluators = _split_context(engine, spec, split)
  metrics = evaluate_with_ema(lambda s, evs: run_evaluators(evs, s, context), state, evaluators, split)
  path = run_dir / "evaluations" / (f"step_{chosen}.json" if split == "val" else f"step_{chosen}_{split}.json")
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"step": chosen, "split": split, "checkpoint": str(checkpoints / str(chosen)),
              "overrides": list(overrides), "evaluators": [e.name for e in evaluators], "metrics": metrics}
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
  return Evaluation(run_dir=run_dir, step=chosen, split=split, metrics=metrics, path=path)


def print_table(evaluation: Evaluation) -> None:
  """The metrics as a rich table on stdout."""
  from rich.console import Console
  from rich.table import Table

  table = Table(title=f"{evaluation.run_dir} · step {evaluation.step} · {evaluation.split}")
  table.add_column("metric")
  table.add_column("value", justify="right")
  for name, value in sorted(evaluation.metrics.items()):
    table.add_row(name, f"{value:.6g}")
  console = Console()
  console.print(table)
  console.print(f"written to {evaluation.path}")


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point; a bad run directory, step or override exits 2 with one line."""
  parser = argparse.ArgumentParser(prog="python -m jaxtrain.evaluate", description=__doc__.splitlines()[0])
  parser.add_argument("run_dir", help="a run directory (it holds .hydra/ and checkpoints/)")
  parser.add_argument("--step", default="last", help="a checkpoint step, best or last (default: last)")
  parser.add_argument("--split", default="val", choices=("val", "train"))
  parser.add_argument("overrides", nargs="*", help="key=value changes to the run's config")
  args = parser.parse_intermixed_args(argv)
  # Orbax warns that a read-only manager will not save: true, and not news here.
  logging.getLogger("absl").setLevel(logging.ERROR)
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  try:
    evaluation = evaluate_run(args.run_dir, step=args.step, split=args.split, overrides=args.overrides)
  except ConfigError as err:
    print(f"jaxtrain.evaluate: error: {err}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)
  print_table(evaluation)


if __name__ == "__main__":
  main()
