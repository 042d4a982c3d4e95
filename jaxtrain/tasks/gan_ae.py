"""Task `gan_ae`: an autoencoder trained on reconstruction MSE plus a
non-saturating adversarial loss from an MLP discriminator.

The autoencoder (model/encoder, model/latent, model/decoder) is the generator:
its params and optimizer state are the TrainState's own, updated with the
run's `optim`/`schedule`. The discriminator's params and optimizer state live
in `TrainState.extra`; its optimizer comes from `task.disc_optim` and
`task.disc_schedule`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.config.schema import ModelConfig, OptimConfig, ScheduleConfig
from jaxtrain.core.optim import (OPTIMIZERS, SCHEDULES, current_learning_rate, make_optimizer, make_schedule,
                                 optimizer_steps)
from jaxtrain.core.precision import cast_floats, cast_like
from jaxtrain.core.step import WEIGHT_KEY, example_weights, weighted_mean
from jaxtrain.errors import ConfigError
from jaxtrain.models.composite import apply_with_state, build_autoencoder, init_variables
from jaxtrain.models.discriminator import (Discriminator, DiscriminatorConfig, discriminator_losses,
                                           generator_adversarial_loss)
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task

UPDATES = ("alternating", "simultaneous")


@dataclasses.dataclass
class GanAEConfig:
  name: str = "gan_ae"
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  adv_weight: float = 0.01
  # alternating: discriminator step, then a generator step against the updated
  # discriminator; simultaneous: both from the same forward pass.
  update: str = "alternating"
  discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
  disc_optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3, b1=0.5))
  disc_schedule: ScheduleConfig = dataclasses.field(
      default_factory=lambda: ScheduleConfig(name="constant", warmup_steps=0))


@register_task("gan_ae", store_config=False)  # options live in configs/task/gan_ae.yaml
class GanAutoencoderTask(Task):
  """Reconstructs batch["x"]; a discriminator tells real examples from reconstructions."""

  config_class = GanAEConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    _check(config, example_batch)
    self.example_x = np.asarray(example_batch["x"][:2])
    self.generator = build_autoencoder(config.model, self.example_x.shape[1:])
    self.discriminator = Discriminator(tuple(config.discriminator.widths), config.discriminator.activation)

  def init(self, rng):
    return init_variables(self.generator, rng, self.example_x, jnp.ones(2), train=False)

  def init_extra(self, rng):
    disc_params = self.discriminator.init(rng, self.example_x)["params"]
    return {"disc_params": disc_params, "disc_opt_state": self._disc_optimizer().init(disc_params)}

  def _disc_optimizer(self) -> optax.GradientTransformation:
    cfg = self.config
    steps = optimizer_steps(self.total_steps or 1, cfg.disc_optim.accumulate)
    return make_optimizer(cfg.disc_optim, make_schedule(cfg.disc_schedule, cfg.disc_optim.lr, steps))

  def _autoencode(self, params, model_state, batch, train):
    # trainer.precision: the generator runs on compute-dtype copies; its outputs return as float32.
    outputs, new_model_state = apply_with_state(self.generator, self._compute(params), model_state,
                                                self._compute(batch["x"]), example_weights(batch), train=train)
    return cast_floats(outputs, jnp.float32), cast_like(new_model_state, model_state)

  def _judge(self, disc_params, x):
    """Discriminator logits (float32) of x, computed in the run's compute dtype."""
    logits = self.discriminator.apply({"params": self._compute(disc_params)}, self._compute(x))
    return logits.astype(jnp.float32)

  def _compute(self, tree):
    return cast_floats(tree, self.compute_dtype) if self.compute_dtype is not None else tree

  def _generator_objective(self, reconstruction, aux_loss, disc_params, batch):
    """MSE + adv_weight * non-saturating adversarial loss + the latent's aux loss."""
    mse = weighted_mean(jnp.square(reconstruction - batch["x"]), batch)
    fake_logits = self._judge(disc_params, reconstruction)
    g_adv = weighted_mean(generator_adversarial_loss(fake_logits), batch)
    loss = mse + self.config.adv_weight * g_adv + weighted_mean(aux_loss, batch)
    return loss, {"mse": mse, "g_adv": g_adv}

  def _disc_objective(self, disc_params, batch, fake):
    real_logits = self._judge(disc_params, batch["x"])
    fake_logits = self._judge(disc_params, fake)
    loss, accuracy = discriminator_losses(real_logits, fake_logits)
    return weighted_mean(loss, batch), weighted_mean(accuracy, batch)

  def loss(self, params, model_state, batch, rng, train):
    """The reconstruction part of the objective (the task's own steps add the adversarial term)."""
    (reconstruction, _, aux_loss, latent_metrics), model_state = self._autoencode(params, model_state, batch, train)
    mse = weighted_mean(jnp.square(reconstruction - batch["x"]), batch)
    return mse + weighted_mean(aux_loss, batch), (dict(latent_metrics, mse=mse), model_state)

  def train_step(self):
    disc_tx = self._disc_optimizer()
    alternating = self.config.update == "alternating"

    def train_step(state, batch):
      def generate(params):
        (reconstruction, _, aux_loss, latent_metrics), model_state = self._autoencode(
            params, state.model_state, batch, True)
        return (reconstruction, aux_loss), (latent_metrics, model_state)

      # One generator forward pass serves both players; its pullback turns the
      # generator objective's gradients w.r.t. the outputs into param gradients.
      outputs, pullback, (latent_metrics, model_state) = jax.vjp(generate, state.params, has_aux=True)
      disc_params, disc_opt_state = state.extra["disc_params"], state.extra["disc_opt_state"]
      (d_loss, d_acc), d_grads = jax.value_and_grad(self._disc_objective, has_aux=True)(
          disc_params, batch, jax.lax.stop_gradient(outputs[0]))
      d_updates, disc_opt_state = disc_tx.update(d_grads, disc_opt_state, disc_params)
      new_disc_params = optax.apply_updates(disc_params, d_updates)
      judge = new_disc_params if alternating else disc_params
      (loss, metrics), output_grads = jax.value_and_grad(self._generator_objective, argnums=(0, 1), has_aux=True)(
          *outputs, judge, batch)
      (grads,) = pullback(output_grads)
      new_state = state.apply_gradients(grads, model_state=model_state,
                                        extra={"disc_params": new_disc_params, "disc_opt_state": disc_opt_state})
      d_grad_norm = optax.global_norm(d_grads)
      # The guard judges a step by `loss` and `grad_norm` and then keeps or
      # drops the whole new state, discriminator included: a non-finite
      # discriminator gradient must make the step bad too.
      grad_norm = jnp.where(jnp.isfinite(d_grad_norm), optax.global_norm(grads), jnp.nan)
      metrics = dict(latent_metrics, **metrics, loss=loss, d_loss=d_loss, d_acc=d_acc, grad_norm=grad_norm,
                     d_grad_norm=d_grad_norm, lr=current_learning_rate(new_state.opt_state),
                     disc_lr=current_learning_rate(disc_opt_state))
      return new_state, metrics

    return train_step

  def eval_step(self):
    def eval_step(state, batch):
      (reconstruction, _, aux_loss, latent_metrics), _ = self._autoencode(state.params, state.model_state, batch,
                                                                          False)
      disc_params = state.extra["disc_params"]
      loss, metrics = self._generator_objective(reconstruction, aux_loss, disc_params, batch)
      d_loss, d_acc = self._disc_objective(disc_params, batch, reconstruction)
      total = jnp.sum(example_weights(batch))
      means = dict(latent_metrics, **metrics, loss=loss, d_loss=d_loss, d_acc=d_acc)
      return {**{name: value * total for name, value in means.items()}, WEIGHT_KEY: total}

    return eval_step

  def reconstruct(self, params, model_state, batch, rng):
    return self._autoencode(params, model_state, batch, False)[0][0]

  def embed(self, params, model_state, batch):
    return self._autoencode(params, model_state, batch, False)[0][1]


def _check(cfg: GanAEConfig, example_batch) -> None:
  """One-line ConfigErrors for the task's own choices and for data it cannot model."""
  if "mask" in example_batch:
    raise ConfigError("task=gan_ae compares examples element by element; point sets with a mask (e.g. "
                      "data=digits_points) are not supported: use flat or image data")
  if cfg.update not in UPDATES:
    raise ConfigError(f"task.update={cfg.update!r}: choose one of: {', '.join(UPDATES)}")
  if cfg.adv_weight < 0:
    raise ConfigError(f"task.adv_weight={cfg.adv_weight}: must be >= 0")
  if cfg.disc_optim.name not in OPTIMIZERS:
    raise ConfigError(f"task.disc_optim.name={cfg.disc_optim.name!r}: choose one of: {', '.join(OPTIMIZERS)}")
  if cfg.disc_optim.lr <= 0:
    raise ConfigError(f"task.disc_optim.lr={cfg.disc_optim.lr}: must be a positive number")
  if cfg.disc_schedule.name not in SCHEDULES:
    raise ConfigError(f"task.disc_schedule.name={cfg.disc_schedule.name!r}: choose one of: {', '.join(SCHEDULES)}")
