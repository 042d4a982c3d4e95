"""From a validated config to the pieces the loop runs: mesh, data, task,
TrainState on the mesh, and the compiled train/eval steps."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxtrain.config.validate import RunSpec
from jaxtrain.core import mesh as mesh_lib
from jaxtrain.core import precision
from jaxtrain.core import sharding as sharding_lib
from jaxtrain.core.compile import ShapeCompiledStep
from jaxtrain.core.guard import StepGuard, guarded
from jaxtrain.core.multi_step import scan_steps
from jaxtrain.core.optim import make_optimizer, make_schedule, optimizer_steps
from jaxtrain.core.state import TrainState, init_state_fn
from jaxtrain.data import block_put, mining, pipeline, validation
from jaxtrain.data.sources import concatenated, load_datasets
from jaxtrain.errors import ConfigError
from jaxtrain.evaluators.base import EvalContext, Evaluator, build_evaluators, run_evaluators
from jaxtrain.tasks.registry import task_class

CACHE_VAL_BYTES = 256 * 2**20


@dataclasses.dataclass
class Engine:
  """Everything built from a config, before any step has run."""

  mesh: jax.sharding.Mesh
  task: Any
  state: TrainState
  state_shardings: Any
  train_step: ShapeCompiledStep
  eval_step: ShapeCompiledStep
  train_data: Any  # grain.MapDataset of this process's batches
  val_data: Any
  val_batches: list | None  # the val split already on the devices, when it is small
  put_batch: Callable[[Any], Any]
  num_train: int
  steps_per_epoch: int
  total_steps: int
  metric_names: list[str]  # the train step's metrics
  eval_metric_names: list[str]  # every evaluator's metrics
  evaluators: list[Evaluator] = dataclasses.field(default_factory=list)  # eval.evaluators, in order
  eval_context: EvalContext | None = None  # the val split and the compiled calls the evaluators share
  mining_table: Any = None  # data.mining: the per-example loss table that steers sampling
  # trainer.steps_per_call > 1 where it applies: the step scanned over that many batches per call.
  multi_step: ShapeCompiledStep | None = None
  steps_per_call: int = 1

  def evaluate(self, state: TrainState, evaluators: Sequence[Evaluator] | None = None) -> dict[str, float]:
    """The results of `evaluators` (default: all of eval.evaluators) on the validation split."""
    return run_evaluators(self.evaluators if evaluators is None else evaluators, state, self.eval_context)

  def train_iterator(self, data_cfg: Any) -> Any:
    """A fresh Grain iterator over the train batches, prefetching to the devices
    (data.put_block of them per transfer where that applies: data/block_put.py)."""
    blocks = None
    if block_put.blocks_apply(data_cfg.put_block, data_cfg.device_prefetch, data_cfg.group_by_dataset,
                              self.mining_table is not None):
      example = self.train_data[0]
      length = block_put.block_length(example, data_cfg.put_block)
      if length > 1:
        blocks = (block_put.BlockPut(mesh_lib.batch_sharding(self.mesh), example, length), length)
    return pipeline.device_iterator(self.train_data, self.put_batch, data_cfg, self.mining_table, blocks)


def total_train_steps(steps: int | None, epochs: float | None, steps_per_epoch: int) -> int:
  """Steps of the run: whichever of trainer.steps and trainer.epochs ends first."""
  candidates = []
  if steps is not None:
    candidates.append(int(steps))
  if epochs is not None:
    candidates.append(max(1, math.ceil(epochs * steps_per_epoch)))
  return min(candidates)


def build(spec: RunSpec) -> Engine:
  """Builds the engine; raises ConfigError for data/model/mesh mismatches."""
  cfg = spec.config
  try:
    mesh = mesh_lib.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, tensor=cfg.mesh.tensor)
  except ValueError as err:
    raise ConfigError(str(err)) from None
  # The batch is split over the data and fsdp axes; tensor-parallel devices share their rows.
  batch_shards = math.prod(mesh.shape[axis] for axis in mesh_lib.BATCH_AXES)
  for key, size in (("data.batch_size", cfg.data.batch_size), ("data.eval_batch_size", cfg.data.eval_batch_size)):
    if size % batch_shards:
      raise ConfigError(f"{key}={size} must be divisible by the {batch_shards} batch shards of the mesh "
                        f"(mesh.data x mesh.fsdp)")

  datasets = load_datasets(cfg.data)  # opened and validated, nothing compiled yet
  # Datasets batched apart (data.group_by_dataset) may differ in shapes, so only their sizes add up here.
  num_train = sum(len(d.train) for d in datasets)
  val_source = concatenated([d.val for d in datasets])
  if num_train < cfg.data.batch_size:
    raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the "
                      f"{num_train} training examples of data={cfg.data.name}")
  task_cls = task_class(spec.task.name)
  validation.check_compatibility(task_cls.expected_inputs(spec.task), [d.train for d in datasets],
                                 f"task={spec.task.name}")
  train_stream = pipeline.train_pipeline(datasets, cfg.data)  # mixture, sampling, mining, augmentation
  train_data = train_stream.dataset
  val_data = pipeline.eval_dataset(val_source, cfg.data, multiple_of=jax.local_device_count())
  example = train_data[0]
  task = task_cls(spec.task, example)
  task.dataset_names = tuple(d.name for d in datasets)  # per-dataset heads and metrics, before init

  steps_per_epoch = num_train // cfg.data.batch_size
  total_steps = total_train_steps(cfg.trainer.steps, cfg.trainer.epochs, steps_per_epoch)
  schedule = make_schedule(cfg.schedule, cfg.optim.lr, optimizer_steps(total_steps, cfg.optim.accumulate))
  tx = make_optimizer(cfg.optim, schedule)
  task.total_steps = total_steps
  task.compute_dtype = precision.compute_dtype(cfg.trainer.precision)
  task.remat = cfg.model.remat
  task.grad_norm = cfg.trainer.grad_norm
  guard = None
  if cfg.trainer.skip_nonfinite or cfg.trainer.spike_zscore is not None:
    guard = StepGuard(skip_nonfinite=cfg.trainer.skip_nonfinite, spike_zscore=cfg.trainer.spike_zscore,
                      spike_window=cfg.trainer.spike_window)
  # The default step skips a bad update under lax.cond on CPUs and TPUs. On GPUs a conditional
  # may read its predicate on the host in the middle of the step, stalling the queue of
  # dispatched steps, so there the step is wrapped by `guarded` (a select after the update).
  task.guard = guard if mesh.devices.flat[0].platform != "gpu" else None
  task.mesh = mesh
  init = init_state_fn(task.init, tx, cfg.trainer.ema_decay, task.init_extra)
  rng = jax.random.PRNGKey(cfg.trainer.seed)
  abstract_state = jax.eval_shape(init, rng)
  shardings = _state_shardings(cfg.mesh, mesh, abstract_state, task)
  # Built by jit straight into its shardings: a device_put'd state could share
  # buffers with its source, which donation would then delete.
  state = jax.jit(init, out_shardings=shardings)(rng)

  batch_sharding = mesh_lib.batch_sharding(mesh)
  replicated = mesh_lib.replicated(mesh)
  put_batch = pipeline.global_batch_putter(batch_sharding)
  example_shardings = jax.tree.map(lambda _: batch_sharding, example)
  step_fn = task.train_step()
  if guard is not None:
    step_fn = guarded(step_fn, guard)  # as it is when the step guards its own update
  if train_stream.mining_table is not None:
    # The step also reports each example's loss, from the step's own loss function: XLA shares the forward pass.
    step_fn = mining.with_example_losses(step_fn, task.step_loss(train=True))
  train_step = ShapeCompiledStep(step_fn, name="train_step",
                                 in_shardings=(shardings, example_shardings), out_shardings=(shardings, replicated))
  multi_step, steps_per_call = None, int(cfg.trainer.steps_per_call)
  if steps_per_call > 1 and multi_steps_apply(cfg.data, train_stream.mining_table is not None):
    multi_step = ShapeCompiledStep(scan_steps(step_fn), name="train_steps",
                                   in_shardings=(shardings, (example_shardings,) * steps_per_call),
                                   out_shardings=(shardings, replicated))
  else:
    steps_per_call = 1
  # The scalar metrics the step returns (mining's per-example arrays are not among them).
  step_metrics = train_step.output_shapes(abstract_state, _abstract(example))[1]
  metric_names = sorted(name for name in step_metrics if name not in mining.PER_EXAMPLE_METRICS)
  # A small val split stays on the devices: evaluations then cost only compute.
  val_bytes = len(val_source) * sum(math.prod(f.shape) * f.dtype.itemsize for f in val_source.features.values())
  eval_context = EvalContext(task, mesh, shardings, abstract_state, val_data, put_batch,
                             cache_on_device=val_bytes <= CACHE_VAL_BYTES)
  evaluators, eval_names = build_evaluators(cfg.eval.evaluators, eval_context)
  return Engine(mesh=mesh, task=task, state=state, state_shardings=shardings, train_step=train_step,
                eval_step=eval_context.eval_step, train_data=train_data, val_data=val_data,
                val_batches=eval_context.device_batches, put_batch=put_batch,
                num_train=num_train, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                metric_names=metric_names, eval_metric_names=eval_names, evaluators=evaluators,
                eval_context=eval_context, mining_table=train_stream.mining_table, multi_step=multi_step,
                steps_per_call=steps_per_call)


def multi_steps_apply(data_cfg: Any, mined: bool) -> bool:
  """Whether a call may run several steps (trainer.steps_per_call): not with hard-example
  mining, whose table must see each step's losses before the next batch is drawn, nor with
  data.group_by_dataset, whose batches differ in shape from one dataset to the next."""
  return not mined and not data_cfg.group_by_dataset


def _state_shardings(mesh_cfg: Any, mesh: jax.sharding.Mesh, abstract_state: TrainState, task: Any) -> Any:
  """Layouts of the whole state: mesh.rules, then the task's logical axis names, then mesh.params."""
  try:
    specs = sharding_lib.param_specs(abstract_state.params, mesh, rules=mesh_cfg.rules,
                                     logical_axes=task.logical_axes(), logical_rules=mesh_cfg.logical_rules,
                                     fallback=mesh_cfg.params, fsdp_min_size=mesh_cfg.fsdp_min_size)
    return sharding_lib.state_shardings(abstract_state, mesh, specs, optimizer=mesh_cfg.optimizer,
                                        fallback=mesh_cfg.params, fsdp_min_size=mesh_cfg.fsdp_min_size)
  except ValueError as err:
    raise ConfigError(str(err)) from None


def _abstract(batch: Any) -> Any:
  """Global-shape ShapeDtypeStructs for a per-process host batch."""
  procs = jax.process_count()
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] * procs,) + x.shape[1:], np.asarray(x).dtype),
                      batch)
