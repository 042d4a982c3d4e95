"""Optax factories: schedules, optimizers, clipping, accumulation, freezing. Pure."""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import optax
from flax import traverse_util

from jaxtrain.config.schema import OptimConfig, ScheduleConfig

OPTIMIZERS = ("adam", "adamw", "sgd", "lion")
SCHEDULES = ("constant", "warmup_cosine", "linear_warmup", "step_decay", "cosine_restarts")


def make_schedule(cfg: ScheduleConfig, peak_lr: float, total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the optimizer's update count.

  `total_steps` counts optimizer updates (train steps / optim.accumulate).
  """
  warmup = max(0, int(cfg.warmup_steps))
  end_lr = peak_lr * cfg.end_lr_factor
  if cfg.name == "constant":
    return optax.constant_schedule(peak_lr)
  if cfg.name == "warmup_cosine":
    # decay_steps includes the warmup (optax's convention).
    decay_steps = max(cfg.decay_steps or total_steps, warmup + 1)
    return optax.warmup_cosine_decay_schedule(0.0, peak_lr, warmup, decay_steps, end_lr)
  if cfg.name == "linear_warmup":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, warmup), optax.constant_schedule(peak_lr)], [warmup]
    )
  if cfg.name == "step_decay":
    decay = optax.exponential_decay(peak_lr, cfg.decay_every, cfg.decay_rate, staircase=True)
    if not warmup:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup), decay], [warmup])
  if cfg.name == "cosine_restarts":
    cycle = dict(
        init_value=0.0 if warmup else peak_lr,
        peak_value=peak_lr,
        warmup_steps=warmup,
        decay_steps=max(cfg.restart_every, warmup + 1),
        end_value=end_lr,
    )
    n_cycles = max(1, -(-total_steps // cfg.restart_every))
    return optax.sgdr_schedule([cycle] * n_cycles)
  raise ValueError(f"schedule={cfg.name!r}: choose one of {', '.join(SCHEDULES)}")


def _decay_mask(params: Any) -> Any:
  """Weight decay applies to matrices and kernels, not to biases and norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _base_optimizer(cfg: OptimConfig, learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  if cfg.name == "adamw":
    return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=_decay_mask)
  if cfg.name == "lion":
    return optax.lion(learning_rate, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_decay_mask)
  if cfg.name == "adam":
    core = optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "sgd":
    core = optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  else:
    raise ValueError(f"optim={cfg.name!r}: choose one of {', '.join(OPTIMIZERS)}")
  if not cfg.weight_decay:
    return core
  # Coupled (L2-style) decay for the optimizers without a decoupled variant.
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask), core)


def freeze_labels(params: Any, patterns: Sequence[str]) -> Any:
  """'frozen' for every param whose '/'-joined path matches one of `patterns`, else 'train'."""
  compiled = [re.compile(p) for p in patterns]
  flat = traverse_util.flatten_dict(params, sep="/")
  labels = {path: "frozen" if any(r.search(path) for r in compiled) else "train" for path in flat}
  return traverse_util.unflatten_dict(labels, sep="/")


def make_optimizer(cfg: OptimConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The full update rule: clip -> optimizer(lr schedule) -> freeze -> accumulate.

  The optimizer is wrapped in `inject_hyperparams`, so the learning rate it
  actually used is readable from the state with `current_learning_rate`.
  """
  if cfg.accumulate < 1:
    raise ValueError(f"optim.accumulate={cfg.accumulate}: must be >= 1")
  tx = optax.inject_hyperparams(_base_optimizer, static_args=("cfg",))(cfg=cfg, learning_rate=schedule)
  if cfg.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  if cfg.freeze:
    patterns = tuple(cfg.freeze)
    tx = optax.multi_transform(
        {"train": tx, "frozen": optax.set_to_zero()}, lambda params: freeze_labels(params, patterns)
    )
  if cfg.accumulate > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulate)
  return tx


def current_learning_rate(opt_state: Any) -> jax.Array:
  """The learning rate injected into the optimizer state by `make_optimizer`."""
  # The schedule's own state is also keyed 'learning_rate'; the value is the array.
  return optax.tree_utils.tree_get(
      opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
  )


def optimizer_steps(train_steps: int, accumulate: int) -> int:
  """Optimizer updates performed in `train_steps` micro-steps."""
  return max(1, train_steps // max(1, accumulate))

