"""The Python face: `compose(overrides) -> config` and `run(config) -> Result`."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import traceback
from pathlib import Path
from typing import Any, Sequence

import jax
from omegaconf import DictConfig, OmegaConf

from jaxtrain import build as build_lib
from jaxtrain import distributed
from jaxtrain.actions.base import Bookkeeping, PeriodicAction
from jaxtrain.actions.checkpointing import SaveCheckpoint
from jaxtrain.actions.evaluation import Evaluate
from jaxtrain.actions.heartbeat import Heartbeat
from jaxtrain.actions.logging import LogTrainMetrics, step_throughput
from jaxtrain.actions.standard import standard_actions
from jaxtrain.checkpoint import Checkpointer, abstract_with_shardings, find_checkpoint_dir
from jaxtrain.compilation_cache import enable_compilation_cache
from jaxtrain.config import compose as compose_lib
from jaxtrain.config.validate import RunSpec, validate
from jaxtrain.core.memory import MIB, StepMemory, step_memory
from jaxtrain.errors import ConfigError, TrainingDiverged
from jaxtrain.long_lived import frozen_for_run
from jaxtrain.loop import call_lengths, fit
from jaxtrain.preemption import Preempted, PreemptionWatcher
from jaxtrain.resume import restore_newest_valid
from jaxtrain.track import rundir
from jaxtrain.track.events import EventWriter
from jaxtrain.track.scalars import ScalarWriter, columns_for, drop_rows_after
from jaxtrain.track.secrets import redact_yaml_files
from jaxtrain.track.tracking import RunTracking
from jaxtrain.track.summary import params_fingerprint, write_summary

log = logging.getLogger("jaxtrain")


@dataclasses.dataclass(frozen=True)
class Result:
  """What a finished run returns: where it lives, its summary and final state.

  `run_dir` is None for a run with logging.save_artifacts=false.
  """

  run_dir: Path | None
  summary: dict[str, Any]
  state: Any

  @property
  def params_fingerprint(self) -> str:
    return self.summary["params_fingerprint"]


def compose(overrides: Sequence[str] = ()) -> DictConfig:
  """The run config for Hydra-style `overrides` (e.g. ["optim.lr=3e-4", "trainer.steps=100"]).

  Raises ConfigError (one line naming the key and the choices) for bad overrides.
  """
  cfg = compose_lib.compose(overrides)
  validate(cfg)  # fail here, before anything is built
  return cfg


def run(config: DictConfig, run_dir: str | Path | None = None,
        extra_actions: Sequence[PeriodicAction] = ()) -> Result:
  """Trains the config's task and returns the Result.

  `run_dir` defaults to `run.dir`, or a new outputs/runs/run_<timestamp>_<name>.
  With `run.resume=auto` an existing run directory continues from its newest checkpoint.
  With `logging.save_artifacts=false` the run leaves no files at all.
  `extra_actions` run after the standard ones, on their own schedules (a sweep's pruning, say).
  """
  # Garbage collections during the run scan only what the run creates (jaxtrain/long_lived.py).
  with frozen_for_run():
    return _run(config, run_dir, extra_actions)


def _run(config: DictConfig, run_dir: str | Path | None, extra_actions: Sequence[PeriodicAction]) -> Result:
  spec = validate(config)
  _setup_logging()
  distributed.initialize(spec.config.dist)  # several processes: before anything touches jax
  # Before anything compiles, so the train and eval steps can come from the cache.
  enable_compilation_cache(spec.config.trainer.compilation_cache_dir, announce=jax.process_index() == 0)
  overrides = _overrides_of(config)
  run_dir = Path(run_dir or rundir.run_dir_for(spec.config.run.dir, spec.config.run.root, spec.config.run.name))
  scratch = None
  if not spec.config.logging.save_artifacts:
    # Every writer keeps its usual path, inside a directory removed at the end.
    scratch = tempfile.TemporaryDirectory(prefix="jaxtrain-run-")
    run_dir = Path(scratch.name) / "run"
  resume_from = _resume_source(spec, run_dir)
  distributed.require_shared_run_dir(run_dir, spec.config.logging.save_artifacts)
  # The experiment-database row and the metric writers (a run that saves nothing records nothing);
  # a writer whose package is missing fails here, before the run directory holds anything.
  tracking = RunTracking(spec, run_dir, overrides,
                         enabled=jax.process_index() == 0 and spec.config.logging.save_artifacts)
  if jax.process_index() == 0:  # the one writer of the shared run directory
    _write_config_records(run_dir, spec, overrides)
  events = EventWriter(run_dir / rundir.FACTS_DIR / "events.jsonl", enabled=jax.process_index() == 0)
  try:
    result = _train(spec, run_dir, resume_from, events, extra_actions, tracking=tracking)
    tracking.end("finished", result.summary)
    return result if scratch is None else dataclasses.replace(result, run_dir=None)
  except (Preempted, TrainingDiverged) as err:
    tracking.end("preempted" if isinstance(err, Preempted) else "failed")
    raise  # orderly endings, already recorded as on_preemption / on_train_end
  except BaseException as err:
    events.write("on_exception", error=type(err).__name__, message=str(err)[:2000],
                 traceback=traceback.format_exc(limit=8)[-4000:])
    tracking.end("failed")
    raise
  finally:
    events.close()
    if scratch is not None:
      scratch.cleanup()


def _setup_logging() -> None:
  """Progress lines reach the console from Python too; Orbax's per-save INFO chatter does not."""
  for noisy in ("absl", "jax._src.xla_bridge"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # Importing Orbax makes absl call logging.basicConfig(), so the root logger usually has a
  # handler at WARNING by now (scripts, Jupyter kernels): nobody's choice to drop INFO lines.
  # A jaxtrain logger left as it was is opened to INFO; its lines go to the root's handlers,
  # or to one of its own when there are none.
  if not log.handlers and log.level == logging.NOTSET and not log.isEnabledFor(logging.INFO):
    log.setLevel(logging.INFO)
    if not logging.getLogger().handlers:
      handler = logging.StreamHandler()
      handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s] %(message)s"))
      log.addHandler(handler)


def _overrides_of(config: DictConfig) -> list[str]:
  if "hydra" in config and OmegaConf.select(config, "hydra.overrides.task") is not None:
    return list(config.hydra.overrides.task)
  return []


def _resume_source(spec: RunSpec, run_dir: Path) -> Path | None:
  """The checkpoints folder to resume from, per `run.resume`, or None for a fresh start."""
  resume = spec.config.run.resume
  own = run_dir / rundir.CHECKPOINTS_DIR
  if resume == "never":
    if rundir.holds_run(run_dir):
      raise ConfigError(f"run.resume=never but {run_dir} already holds a run; "
                        "choose another run.dir or run.resume=auto")
    return None
  if resume == "auto":
    return own if own.is_dir() and any(p.name.isdigit() for p in own.iterdir()) else None
  return find_checkpoint_dir(Path(resume))


def _write_config_records(run_dir: Path, spec: RunSpec, overrides: list[str]) -> None:
  """.hydra/config.yaml and overrides.yaml, as Hydra's CLI writes them."""
  hydra_dir = run_dir / ".hydra"
  hydra_dir.mkdir(parents=True, exist_ok=True)
  if not (hydra_dir / "config.yaml").exists():
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(spec.raw))
  if not (hydra_dir / "overrides.yaml").exists():
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
  # Also Hydra's own files (the CLI writes them first): no secret stays in a snapshot.
  redact_yaml_files(hydra_dir)
  if (run_dir.parent / "multirun.yaml").exists():  # a --multirun job: the sweep's record of its overrides
    redact_yaml_files(run_dir.parent)


def _train(spec: RunSpec, run_dir: Path, resume_from: Path | None, events: EventWriter,
           extra_actions: Sequence[PeriodicAction] = (), tracking: RunTracking | None = None) -> Result:
  cfg = spec.config
  is_writer = jax.process_index() == 0
  heartbeat = Heartbeat(run_dir / "heartbeat.json", enabled=is_writer)
  heartbeat.mark(0, "starting")
  engine = build_lib.build(spec)
  _check_monitors(cfg, engine)

  checkpointer = Checkpointer(run_dir / rundir.CHECKPOINTS_DIR, cfg.checkpoint)
  state, book, start_step, data_iterator = engine.state, Bookkeeping(), 0, None
  if resume_from is not None:
    own = resume_from.absolute() == checkpointer.directory
    # Another run's checkpoints are only read, never touched.
    reader = checkpointer if own else Checkpointer(resume_from, cfg.checkpoint, read_only=True)
    abstract = abstract_with_shardings(jax.eval_shape(lambda: engine.state), engine.state_shardings)
    restored = restore_newest_valid(reader, abstract, lambda: engine.train_iterator(cfg.data), quarantine=own)
    if restored is not None:
      state, book, start_step, data_iterator, damaged = restored
      log.info("resumed from %s at step %d", resume_from, start_step)
      if damaged:
        events.write("on_exception", error="DamagedCheckpoint", step=start_step,
                     message=f"damaged checkpoints {damaged} skipped; resumed from step {start_step}")
    if not own:
      reader.close()
  data_iterator = data_iterator or engine.train_iterator(cfg.data)

  scalars_path = run_dir / rundir.FACTS_DIR / "scalars.csv"
  # Rows after the restored step are replayed identically; at step 0 (a run
  # killed before its first checkpoint, restarted in its own directory) that is all of them.
  if is_writer:
    drop_rows_after(scalars_path, start_step)
  throughput = step_throughput(cfg, engine)  # tokens_per_sec and mfu columns for tasks that count their cost
  scalars = ScalarWriter(scalars_path, columns_for(engine.metric_names + engine.eval_metric_names
                                                   + (throughput.columns if throughput else [])),
                         enabled=is_writer, sinks=tracking.open_writers(start_step) if tracking else ())

  actions = [*standard_actions(cfg, engine, events, scalars, checkpointer, heartbeat, start_step), *extra_actions]
  # Compile before the clock starts: steps/s in the summary excludes compilation. With
  # trainer.steps_per_call, each call length the run will use (loop.call_lengths).
  lengths = call_lengths(start_step, engine.total_steps, engine.steps_per_call, actions) or {1}
  if lengths == {1} and engine.total_steps - start_step >= engine.steps_per_call > 1:
    log.info("trainer.steps_per_call=%d: every call runs one step, because eval, log or checkpoint steps come "
             "closer together than that; make trainer.eval_every, trainer.log_every and checkpoint.every "
             "multiples of it", engine.steps_per_call)
  example = engine.put_batch(engine.train_data[0])
  executables = []
  if 1 in lengths:
    executables.append(engine.train_step.compile(state, example))
  if engine.multi_step is not None and engine.steps_per_call in lengths:
    executables.append(engine.multi_step.compile(state, (example,) * engine.steps_per_call))
  engine.eval_step.compile(state, engine.put_batch(engine.val_data[0]))
  checkpointer.prepare(state)
  compile_seconds = sum(s.compile_seconds for s in (engine.train_step, engine.multi_step, engine.eval_step) if s)
  # The largest executable decides whether a step fits: the one holding several batches, if any.
  memory = _check_step_memory(executables[-1], cfg.trainer.check_memory)

  events.write("on_start", step=start_step, total_steps=engine.total_steps, resumed_from=str(resume_from or ""),
               devices=jax.device_count(), processes=jax.process_count(), mesh=dict(engine.mesh.shape),
               steps_per_epoch=engine.steps_per_epoch, compile_seconds=round(compile_seconds, 3),
               step_memory_mib=memory and round(memory.total_bytes / MIB, 1))
  saver = next(a for a in actions if isinstance(a, SaveCheckpoint))

  def emergency_checkpoint(ctx, err: Exception) -> None:
    """Keeps the progress of a run that failed outside the step, if its state is intact."""
    if all(not leaf.is_deleted() for leaf in jax.tree.leaves(ctx.state)):
      saver.run(ctx)
      checkpointer.wait()
    heartbeat.mark(ctx.step, "failed", error=type(err).__name__)

  watcher = PreemptionWatcher(cfg.trainer.preemption_signals, sync_point=checkpointer.manager.reached_preemption)
  try:
    heartbeat.mark(start_step, "training")
    with watcher:
      result = fit(state, engine.train_step, data_iterator, actions, start_step=start_step,
                   total_steps=engine.total_steps, steps_per_epoch=engine.steps_per_epoch, book=book,
                   should_stop=watcher.should_stop, on_exception=emergency_checkpoint,
                   max_in_flight=cfg.trainer.max_steps_in_flight, multi_step=engine.multi_step,
                   steps_per_call=engine.steps_per_call)
    checkpointer.wait()
  finally:
    checkpointer.close()
    data_iterator.close()
    scalars.close()

  if result.preempted:
    events.write("on_preemption", step=result.final_step, signal=watcher.received)
    heartbeat.mark(result.final_step, "preempted", signal=watcher.received)
    raise Preempted(watcher.received or "signal", result.final_step)
  summary = _summary(engine, result, compile_seconds, actions)
  events.write("on_train_end", step=result.final_step, stop_reason=result.book.stop_reason,
               steps_per_sec=result.steps_per_sec and round(result.steps_per_sec, 3))
  if is_writer:
    write_summary(run_dir / rundir.SUMMARY_FILE, summary)
  heartbeat.mark(result.final_step, "finished")
  log.info("finished at step %d (%s); %s; run directory: %s", result.final_step,
           result.book.stop_reason or "all steps done",
           ", ".join(f"{k} {v:.5g}" for k, v in result.book.last_eval.items()),
           run_dir if cfg.logging.save_artifacts else "none (logging.save_artifacts=false)")
  if result.diverged:
    raise TrainingDiverged(result.book.stop_reason)
  return Result(run_dir=run_dir, summary=summary, state=result.state)


def _check_step_memory(executable: Any, enforce: bool) -> StepMemory | None:
  """Logs the compiled train step's memory per device; a step that cannot fit is a
  ConfigError now rather than an out-of-memory error after the first step."""
  memory = step_memory(executable)
  if memory is None:
    return None
  log.info("train step memory: %s", memory.describe())
  if enforce and not memory.fits:
    raise ConfigError(f"the train step needs {memory.describe()}; reduce data.batch_size or shard more "
                      "(mesh.fsdp, mesh.tensor, mesh.optimizer=zero1), or set model.remat=full or "
                      "trainer.precision=bf16 (trainer.check_memory=false to try anyway)")
  return memory


def _check_monitors(cfg: Any, engine: build_lib.Engine) -> None:
  """checkpoint.monitor and early_stopping.monitor must name a metric of one of eval.evaluators."""
  early = cfg.trainer.early_stopping
  for label, monitor in (("checkpoint.monitor", cfg.checkpoint.monitor),
                         ("trainer.early_stopping.monitor", early.monitor if early.enabled else None)):
    valid = [f"val/{name}" for name in engine.eval_metric_names]
    if monitor and monitor not in valid:
      raise ConfigError(f"{label}={monitor!r} is not an eval metric; choose one of: {', '.join(valid)}")


def _summary(engine: build_lib.Engine, result: Any, compile_seconds: float, actions: list) -> dict[str, Any]:
  book = result.book
  evaluate = next(a for a in actions if isinstance(a, Evaluate))
  saver = next(a for a in actions if isinstance(a, SaveCheckpoint))
  throughput = next(a for a in actions if isinstance(a, LogTrainMetrics)).throughput
  return {
      "final_step": result.final_step,
      "total_steps": engine.total_steps,
      "epochs": round(result.final_step / engine.steps_per_epoch, 4),
      "best_step": book.best_step,
      "best_metrics": {saver.monitor: book.best_value} if saver.monitor else {},
      "final_metrics": book.last_eval,
      "stop_reason": book.stop_reason,
      "train_steps_per_sec": result.steps_per_sec and round(result.steps_per_sec, 3),
      # CPU time of the whole process per step: on a CPU device mostly XLA computing, on an
      # accelerator the host's own work. Unlike steps/s it barely moves with other load.
      "train_cpu_ms_per_step": result.cpu_ms_per_step and round(result.cpu_ms_per_step, 3),
      **(throughput.summary(result.steps_per_sec) if throughput else {}),
      # Share of the loop's wall time blocked on the data pipeline (next(data_iterator)).
      "input_wait_fraction": result.input_wait_fraction and round(result.input_wait_fraction, 4),
      "steps_this_session": result.steps_run,
      "compile_seconds": round(compile_seconds, 3),
      "eval_seconds": round(evaluate.seconds, 3),
      "eval_seconds_by_evaluator": {name: round(sec, 3) for name, sec in evaluate.seconds_by_evaluator.items()},
      "checkpoint_blocking_seconds": round(saver.blocking_seconds, 3),
      # Executables of the train step, one per batch shape (and one of several steps per call).
      "train_step_compilations": engine.train_step.num_compilations + (
          engine.multi_step.num_compilations if engine.multi_step else 0),
      "skipped_updates": int(jax.device_get(result.state.guard.total_skipped)) if result.state.guard else 0,
      "params_fingerprint": params_fingerprint(result.state.params),
      "devices": jax.device_count(),
      "mesh": dict(engine.mesh.shape),
  }
