"""Task `policy_value`: a small board ResNet with a policy head and a value head (AlphaZero-style).

Trained on solved positions (data=tictactoe): the policy is pulled towards the
uniform distribution over the optimal moves (cross-entropy, illegal moves
masked out of the softmax). The value head classifies the game's outcome for
the side to move as loss / draw / win (cross-entropy); its value is
P(win) - P(loss) in [-1, 1], scored by MSE against the game value. The
evaluator `value_calibration` reports the expected calibration error of that
loss/draw/win predictor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.core.step import example_weights, weighted_mean
from jaxtrain.errors import ConfigError
from jaxtrain.evaluators.base import EvalContext, Evaluator, EvaluatorConfig, register_evaluator
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task

MASKED_LOGIT = -1e9  # finite, so that 0 * masked logit stays 0 in the cross-entropy


@dataclasses.dataclass
class PolicyValueConfig:
  name: str = "policy_value"
  width: int = 32
  blocks: int = 3
  # Loss = policy cross-entropy + value_weight * loss/draw/win cross-entropy.
  value_weight: float = 1.0
  board_key: str = "x"
  legal_key: str = "legal"
  policy_key: str = "policy"
  value_key: str = "value"


class ResidualBlock(nn.Module):
  """conv -> LayerNorm -> relu -> conv -> LayerNorm, plus the input (no batch statistics to carry)."""

  width: int

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    y = nn.relu(nn.LayerNorm()(nn.Conv(self.width, (3, 3))(h)))
    y = nn.LayerNorm()(nn.Conv(self.width, (3, 3))(y))
    return nn.relu(h + y)


class PolicyValueNet(nn.Module):
  """Board [B, H, W, C] -> (policy logits [B, H*W] with illegal moves masked, loss/draw/win logits [B, 3])."""

  width: int
  blocks: int

  @nn.compact
  def __call__(self, board: jax.Array, legal: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = nn.relu(nn.LayerNorm()(nn.Conv(self.width, (3, 3))(board)))
    for _ in range(self.blocks):
      h = ResidualBlock(self.width)(h)
    policy = nn.relu(nn.Conv(2, (1, 1), name="policy_conv")(h)).reshape(h.shape[0], -1)
    logits = nn.Dense(legal.shape[-1], name="policy_head")(policy)
    value = nn.relu(nn.Dense(self.width, name="value_hidden")(h.reshape(h.shape[0], -1)))
    outcome_logits = nn.Dense(3, name="value_head")(value)
    return jnp.where(legal > 0, logits, MASKED_LOGIT), outcome_logits


@register_task("policy_value", store_config=False)  # options live in configs/task/policy_value.yaml
class PolicyValueTask(Task):
  """Policy (optimal-move distribution) and value (game value) from a board position."""

  config_class = PolicyValueConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    if config.width < 1 or config.blocks < 0 or config.value_weight < 0:
      raise ConfigError(f"task: width={config.width} must be >= 1, blocks={config.blocks} >= 0 and "
                        f"value_weight={config.value_weight} >= 0")
    board, legal = np.asarray(example_batch[config.board_key]), np.asarray(example_batch[config.legal_key])
    if board.ndim != 4 or legal.shape[-1] != board.shape[1] * board.shape[2]:
      raise ConfigError(f"task.board_key={config.board_key!r}: expected boards [B, H, W, C] and "
                        f"task.legal_key={config.legal_key!r} [B, H*W]; got {list(board.shape)} and "
                        f"{list(legal.shape)}")
    self.board_shape, self.num_moves = board.shape[1:], legal.shape[-1]
    self.model = PolicyValueNet(config.width, config.blocks)

  @classmethod
  def expected_inputs(cls, config):
    return {config.board_key: (3, "f"), config.legal_key: (1, "f"), config.policy_key: (1, "f"),
            config.value_key: (0, "f")}

  def init(self, rng):
    board = jnp.zeros((1,) + tuple(self.board_shape), jnp.float32)
    return self.model.init(rng, board, jnp.ones((1, self.num_moves), jnp.float32))["params"], {}

  def outputs(self, params, batch) -> tuple[jax.Array, jax.Array]:
    """(masked policy logits [B, moves], loss/draw/win logits [B, 3])."""
    cfg = self.config
    return self.model.apply({"params": params}, batch[cfg.board_key], batch[cfg.legal_key])

  def outcome_prediction(self, params, batch) -> tuple[jax.Array, jax.Array]:
    """(the top outcome's probability [B], 1.0 where the top outcome is the game's [B])."""
    outcome = jax.nn.softmax(self.outputs(params, batch)[1])
    hit = jnp.argmax(outcome, -1) == self._outcome_class(batch)
    return jnp.max(outcome, -1), hit.astype(jnp.float32)

  def _outcome_class(self, batch) -> jax.Array:
    return jnp.round(batch[self.config.value_key]).astype(jnp.int32) + 1  # -1, 0, 1 -> loss, draw, win

  def loss(self, params, model_state, batch, rng, train):
    del rng, train
    cfg = self.config
    logits, outcome_logits = self.outputs(params, batch)
    policy_ce = optax.softmax_cross_entropy(logits, batch[cfg.policy_key])
    outcome_class = self._outcome_class(batch)
    value_ce = optax.softmax_cross_entropy_with_integer_labels(outcome_logits, outcome_class)
    outcome = jax.nn.softmax(outcome_logits)
    # One weighted mean of per-example terms: mining reads each example's loss from it.
    loss = weighted_mean(policy_ce + cfg.value_weight * value_ce, batch)
    optimal = jnp.take_along_axis(batch[cfg.policy_key], jnp.argmax(logits, -1)[:, None], -1)[:, 0] > 0
    value = outcome[:, 2] - outcome[:, 0]
    metrics = {"policy_accuracy": weighted_mean(optimal.astype(jnp.float32), batch),
               "policy_ce": weighted_mean(policy_ce, batch), "value_ce": weighted_mean(value_ce, batch),
               "value_mse": weighted_mean(jnp.square(value - batch[cfg.value_key]), batch),
               "value_accuracy": weighted_mean((jnp.argmax(outcome, -1) == outcome_class).astype(jnp.float32),
                                               batch)}
    return loss, (metrics, model_state)


def expected_calibration_error(confidence: np.ndarray, hit: np.ndarray, bins: int) -> float:
  """sum over equal-width confidence bins of (share of examples) * |mean confidence - accuracy|."""
  which = np.minimum((confidence * bins).astype(int), bins - 1)
  gaps = np.bincount(which, confidence - hit, minlength=bins)
  return float(np.abs(gaps).sum() / len(confidence))


@dataclasses.dataclass
class CalibrationConfig(EvaluatorConfig):
  bins: int = 10


@register_evaluator("value_calibration", CalibrationConfig)
class ValueCalibration(Evaluator):
  """`value_ece`: expected calibration error of the value head as a loss/draw/win predictor
  (top outcome's probability against how often it is the game's outcome), over the split's
  real examples."""

  def metric_names(self, context: EvalContext) -> list[str]:
    if not hasattr(context.task, "outcome_prediction"):
      raise ConfigError(f"eval.evaluators: value_calibration needs task=policy_value; "
                        f"task={context.task.config.name} predicts no outcome")
    if self.config.bins < 1:
      raise ConfigError(f"eval.evaluators: value_calibration bins={self.config.bins}: must be >= 1")
    return ["value_ece"]

  def evaluate(self, state: Any, context: EvalContext) -> dict[str, float]:
    task = context.task

    def predict(state, batch):
      return (*task.outcome_prediction(state.params, batch), example_weights(batch))

    parts = jax.device_get([context.compiled("value_outcome", predict)(state, batch)
                            for batch in context.batches()])
    confidence, hit, weight = (np.concatenate(column) for column in zip(*parts))
    real = weight > 0
    return {"value_ece": expected_calibration_error(confidence[real], hit[real], self.config.bins)}
