"""From a composed DictConfig to checked, typed config objects."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jaxtrain.actions.progress import MODES as PROGRESS
from jaxtrain.config.schema import Config
from jaxtrain.core.mesh import PARAM_RULES
from jaxtrain.core.optim import OPTIMIZERS, SCHEDULES
from jaxtrain.core.precision import PRECISIONS, REMAT_POLICIES
from jaxtrain.core.sharding import OPTIMIZER_LAYOUTS, compile_rules
from jaxtrain.errors import ConfigError
from jaxtrain.snapshot import SNAPSHOT_MODES

MODES = ("min", "max")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A validated config: the typed run config and the task's own typed config."""

  config: Config
  task: Any
  raw: DictConfig  # the composed config without the `hydra` node, for the run's records


# The last config that passed, as plain data (as written and resolved), and its RunSpec: the
# command line validates a job's config and the job validates it again (~70 ms a time).
_last_valid: tuple[tuple[dict, dict], RunSpec] | None = None


def validate(cfg: DictConfig) -> RunSpec:
  """Checks types, choices and value ranges; raises ConfigError naming the key."""
  global _last_valid
  data = OmegaConf.to_container(cfg, resolve=False)
  data.pop("hydra", None)
  raw = OmegaConf.create(data)
  try:
    # Resolved too: the typed config holds resolved values, and a resolver (an environment
    # variable, the time) may give another value for the same text.
    key = (data, OmegaConf.to_container(raw, resolve=True))
  except OmegaConfBaseException:
    key = None  # not resolvable here: validation below names the key at fault
  if key is not None and _last_valid is not None and _last_valid[0] == key:
    return _copy_of(_last_valid[1], raw)
  spec = _validate(raw)
  if key is not None:
    _last_valid = (copy.deepcopy(key), spec)
  return _copy_of(spec, OmegaConf.create(data))


def _copy_of(spec: RunSpec, raw: DictConfig) -> RunSpec:
  # One deepcopy for both: the task config shares the run config's model object.
  config, task = copy.deepcopy((spec.config, spec.task))
  return RunSpec(config=config, task=task, raw=raw)


def _validate(raw: DictConfig) -> RunSpec:
  from jaxtrain.tasks.registry import task_class

  try:
    schema = OmegaConf.structured(Config)
    typed: Config = OmegaConf.to_object(OmegaConf.merge(schema, _known_keys_only(raw)))
  except OmegaConfBaseException as err:
    raise ConfigError(_omegaconf_message(err)) from None
  task_node = raw.get("task")
  if not isinstance(task_node, DictConfig) or "name" not in task_node:
    raise ConfigError("task: missing; select one with task=<name>")
  cls = task_class(str(task_node.name))
  try:
    task_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.config_class), task_node))
  except OmegaConfBaseException as err:
    key = getattr(err, "full_key", "") or ""
    valid = ", ".join(f.name for f in dataclasses.fields(cls.config_class))
    raise ConfigError(f"task.{key}: {_first_line(err)} (task {task_node.name!r} keys: {valid})") from None
  _check_values(typed)
  typed.model = _typed_model(typed.model)
  typed.eval.evaluators = _typed_evaluators(typed.eval.evaluators)
  if "model" in {f.name for f in dataclasses.fields(task_cfg)}:
    task_cfg.model = typed.model  # the task reads its components from its own config
  return RunSpec(config=typed, task=task_cfg, raw=raw)


def _typed_model(model: Any) -> Any:
  """ModelConfig with each component node turned into its registered dataclass."""
  from jaxtrain.models.registry import KINDS, typed_component

  nodes = {kind: OmegaConf.create(getattr(model, kind)) for kind in KINDS}
  if model.latent_dim <= 0:
    raise ConfigError(f"model.latent_dim={model.latent_dim}: must be a positive number")
  return dataclasses.replace(model, **{kind: typed_component(kind, node) for kind, node in nodes.items()})


def _typed_evaluators(nodes: Any) -> list[Any]:
  """eval.evaluators with each entry turned into its evaluator's config dataclass."""
  from jaxtrain.evaluators.base import typed_evaluator_configs

  return typed_evaluator_configs(nodes)


def _known_keys_only(raw: DictConfig) -> DictConfig:
  known = [f.name for f in dataclasses.fields(Config)]
  unknown = [k for k in raw.keys() if k not in known]
  if unknown:
    raise ConfigError(f"{unknown[0]}: unknown top-level key; valid keys: {', '.join(known)}")
  return raw


def _first_line(err: BaseException) -> str:
  text = str(err).strip()
  return text.splitlines()[0] if text else type(err).__name__


def _omegaconf_message(err: OmegaConfBaseException) -> str:
  key = getattr(err, "full_key", None)
  return f"{key}: {_first_line(err)}" if key else _first_line(err)


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ConfigError(f"{key}={value!r}: choose one of: {', '.join(choices)}")


def _positive(key: str, value: Any, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if value is None or value <= 0:
    raise ConfigError(f"{key}={value!r}: must be a positive number")


def _check_values(c: Config) -> None:
  t = c.trainer
  if t.steps is None and t.epochs is None:
    raise ConfigError("trainer.steps / trainer.epochs: set at least one (the run stops at whichever comes first)")
  _positive("trainer.steps", t.steps, allow_none=True)
  _positive("trainer.epochs", t.epochs, allow_none=True)
  _positive("trainer.log_every", t.log_every)
  _positive("trainer.eval_every", t.eval_every)
  if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
    raise ConfigError(f"trainer.ema_decay={t.ema_decay}: must be in (0, 1) or null")
  if t.max_steps_in_flight < 0:
    raise ConfigError(f"trainer.max_steps_in_flight={t.max_steps_in_flight}: must be >= 0 (0 = no limit)")
  _positive("trainer.steps_per_call", t.steps_per_call)
  if t.max_bad_steps < 0:
    raise ConfigError(f"trainer.max_bad_steps={t.max_bad_steps}: must be >= 0 (0 = never stop)")
  _positive("trainer.spike_zscore", t.spike_zscore, allow_none=True)
  _positive("trainer.spike_window", t.spike_window)
  _positive("trainer.heartbeat_secs", t.heartbeat_secs)
  _choice("trainer.early_stopping.mode", t.early_stopping.mode, MODES)
  _positive("trainer.early_stopping.patience", t.early_stopping.patience)
  _positive("data.batch_size", c.data.batch_size)
  _positive("data.eval_batch_size", c.data.eval_batch_size)
  _positive("data.put_block", c.data.put_block)
  _choice("optim", c.optim.name, OPTIMIZERS)
  _positive("optim.lr", c.optim.lr)
  _positive("optim.accumulate", c.optim.accumulate)
  _positive("optim.clip_norm", c.optim.clip_norm, allow_none=True)
  if c.optim.weight_decay < 0:
    raise ConfigError(f"optim.weight_decay={c.optim.weight_decay}: must be >= 0")
  _choice("schedule", c.schedule.name, SCHEDULES)
  if c.schedule.warmup_steps < 0:
    raise ConfigError(f"schedule.warmup_steps={c.schedule.warmup_steps}: must be >= 0")
  _choice("mesh.params", c.mesh.params, PARAM_RULES)
  _choice("mesh.optimizer", c.mesh.optimizer, OPTIMIZER_LAYOUTS)
  _choice("trainer.precision", t.precision, tuple(PRECISIONS))
  _choice("model.remat", c.model.remat, tuple(REMAT_POLICIES))
  try:
    compile_rules(c.mesh.rules)
  except ValueError as err:
    raise ConfigError(str(err)) from None
  _positive("checkpoint.every", c.checkpoint.every)
  _positive("checkpoint.keep", c.checkpoint.keep)
  _choice("checkpoint.mode", c.checkpoint.mode, MODES)
  _choice("checkpoint.snapshot", c.checkpoint.snapshot, SNAPSHOT_MODES)
  _choice("logging.progress", c.logging.progress, PROGRESS)
  if not c.run.resume:
    raise ConfigError("run.resume: must be auto, never, or a path to a run directory")
  _check_dist(c.dist)


def _check_dist(d: Any) -> None:
  """dist.*: values that jax.distributed.initialize would only reject after a wait, or with a traceback."""
  if d.coordinator is not None:
    host, _, port = d.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ConfigError(f"dist.coordinator={d.coordinator!r}: expected host:port, e.g. 10.0.0.1:12355")
  _positive("dist.num_processes", d.num_processes, allow_none=True)
  if d.process_id is not None and d.process_id < 0:
    raise ConfigError(f"dist.process_id={d.process_id}: must be >= 0")
  if d.process_id is not None and d.num_processes is not None and d.process_id >= d.num_processes:
    raise ConfigError(f"dist.process_id={d.process_id}: must be below dist.num_processes={d.num_processes}")
  if d.local_device_ids is not None and any(i < 0 for i in d.local_device_ids):
    raise ConfigError(f"dist.local_device_ids={d.local_device_ids}: device ids are >= 0")
  _positive("dist.timeout_secs", d.timeout_secs)
  _positive("dist.heartbeat_timeout_secs", d.heartbeat_timeout_secs)
