"""What a task provides: models, loss and metrics; optionally its own steps."""

from __future__ import annotations

import abc
from typing import Any, Mapping

import jax
import numpy as np

from jaxtrain.core.precision import with_compute_dtype, with_remat
from jaxtrain.core.step import EvalStep, LossFn, TrainStep, make_eval_step, make_train_step


class Task(abc.ABC):
  """A model family with its loss. Subclasses set `config_class` and register
  themselves with `@register_task(name)`.

  The engine builds a task as `TaskClass(config, example_batch)`, where
  `config` is an instance of `config_class` and `example_batch` is one host
  batch (numpy arrays) from the training pipeline, so that input sizes come
  from the data rather than from the config. A `config_class` with a `model`
  field receives the typed model components (model/encoder, model/latent,
  model/decoder; see jaxtrain/models/registry.py) there.

  Before calling `init` or `train_step`, the engine sets `total_steps` (the
  run's length in train steps), for tasks that build schedules of their own,
  `compute_dtype` (trainer.precision), `remat` (model.remat), `grad_norm`
  (trainer.grad_norm), `guard` (trainer.skip_nonfinite, spike_zscore), `mesh` and
  `dataset_names`.
  """

  config_class: type
  total_steps: int | None = None
  # None: compute in the params' dtype (float32); jnp.bfloat16 under trainer.precision=bf16.
  # The default train/eval steps cast params and float inputs to it (core/precision.py).
  compute_dtype: Any = None
  # model.remat: none | full | dots. The default train step recomputes the whole
  # forward pass under that policy unless the model remats its own blocks
  # (set `remat_in_model = True` then).
  remat: str = "none"
  remat_in_model: bool = False
  # trainer.grad_norm: whether the default train step reports (and the guard checks) grad_norm.
  grad_norm: bool = True
  # trainer.skip_nonfinite / spike_zscore: the StepGuard the default train step asks before
  # updating. None: no guard, or a GPU run; build.py then wraps the step with core.guard.guarded,
  # as it does a task's own step.
  guard: Any = None
  # The device mesh, for losses with per-device code (core/per_device.py).
  mesh: Any = None
  # The run's datasets in order (a batch's "dataset" key indexes it), for per-dataset
  # heads and metrics; set before `init`.
  dataset_names: tuple[str, ...] = ()

  def __init__(self, config: Any, example_batch: Mapping[str, np.ndarray]):
    self.config = config
    self.example_batch = example_batch

  @abc.abstractmethod
  def init(self, rng: jax.Array) -> tuple[Any, Any]:
    """Returns `(params, model_state)` for a fresh model."""

  def init_extra(self, rng: jax.Array) -> Any:
    """State beyond params and optimizer state that the task's own step updates
    (a discriminator with its optimizer state, say). It lives in
    `TrainState.extra`: sharded, checkpointed and donated with the rest."""
    del rng
    return {}

  @abc.abstractmethod
  def loss(self, params: Any, model_state: Any, batch: Mapping[str, jax.Array], rng: jax.Array,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """Returns `(loss, (metrics, new_model_state))`; metrics are weighted batch means."""

  # Optional views used by evaluators and plots (recall@K, latent projections,
  # reconstruction grids, generated samples). A task that does not override one
  # simply does not offer it; see `supports`. All are pure and jit-able.

  def embed(self, params: Any, model_state: Any, batch: Mapping[str, jax.Array]) -> jax.Array:
    """One vector per example, [B, D]: the latent code or embedding."""
    raise NotImplementedError

  def reconstruct(self, params: Any, model_state: Any, batch: Mapping[str, jax.Array],
                  rng: jax.Array) -> jax.Array:
    """The model's reconstruction of batch["x"], same shape."""
    raise NotImplementedError

  def sample(self, params: Any, model_state: Any, rng: jax.Array, num: int) -> jax.Array:
    """`num` generated examples shaped like batch["x"] rows."""
    raise NotImplementedError

  @classmethod
  def expected_inputs(cls, config: Any) -> Mapping[str, tuple[Any, str]] | None:
    """What the model needs of the data, checked against every dataset before anything
    is built: {batch key: (per-example rank, or shape with None for any size, or None
    for any; accepted dtype kinds such as "f" or "iu")}. None: no check."""
    del config
    return None

  def logical_axes(self) -> Any:
    """Logical axis names of every param (a pytree like params whose leaves are
    tuples of names such as ("embed", "mlp")), which mesh.logical_rules map to
    mesh axes; None when the task does not name its axes (regex rules and the
    mesh.params rule then decide)."""
    return None

  def step_cost(self, global_batch_size: int) -> dict[str, float] | None:
    """{"tokens": ..., "flops": ...} of one train step on a global batch of this
    many examples (model FLOPs, forward + backward), from which the logger reports
    tokens_per_sec and MFU; None when the task does not count them."""
    del global_batch_size
    return None

  def supports(self, view: str) -> bool:
    """Whether this task overrides the optional view `view` (embed, reconstruct, sample)."""
    return getattr(type(self), view) is not getattr(Task, view)

  def step_loss(self, train: bool = True) -> LossFn:
    """`self.loss` under the run's precision (and, for training, remat) settings:
    what the default steps call. A task with its own steps uses it too."""
    loss = self.loss
    if train and not self.remat_in_model:
      loss = with_remat(loss, self.remat)
    return with_compute_dtype(loss, self.compute_dtype)

  def train_step(self) -> TrainStep:
    """The pure train step; override for several optimizers or custom updates."""
    return make_train_step(self.step_loss(train=True), grad_norm=self.grad_norm, guard=self.guard)

  def eval_step(self) -> EvalStep:
    """The pure eval step returning weighted metric sums."""
    return make_eval_step(self.step_loss(train=False))
