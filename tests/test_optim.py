"""Optimizers, schedules, freezing, accumulation, clipping and the live learning rate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.config.schema import OptimConfig, ScheduleConfig
from jaxtrain.core.optim import (OPTIMIZERS, SCHEDULES, current_learning_rate, freeze_labels, make_optimizer,
                                 make_schedule, optimizer_steps)
from jaxtrain.core.state import TrainState

PEAK = 0.5


def _params():
  key = jax.random.PRNGKey(0)
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      "encoder": {"kernel": jax.random.normal(k1, (4, 3)), "bias": jnp.zeros((3,))},
      "decoder": {"kernel": jax.random.normal(k2, (3, 2)), "bias": jax.random.normal(k3, (2,))},
  }


def _grads(step):
  return jax.tree.map(lambda p: jnp.sin(jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) + step) + 0.3,
                      _params())


def _run(tx, num_steps=3, params=None):
  params = _params() if params is None else params
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(num_steps):
    updates, state = update(_grads(step), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


# -- schedules ------------------------------------------------------------------


def _schedule(name, total=100, **kw):
  return make_schedule(ScheduleConfig(name=name, **kw), PEAK, total)


def test_every_schedule_builds():
  for name in SCHEDULES:
    values = [float(_schedule(name, warmup_steps=10)(t)) for t in range(0, 120, 7)]
    assert all(np.isfinite(values)) and max(values) <= PEAK + 1e-6 and min(values) >= 0


def test_constant():
  s = _schedule("constant", warmup_steps=0)
  assert [float(s(t)) for t in (0, 10, 10_000)] == [PEAK] * 3


def test_warmup_cosine():
  # optax.warmup_cosine_decay_schedule: decay_steps includes the warmup.
  s = _schedule("warmup_cosine", total=110, warmup_steps=10, end_lr_factor=0.1)
  end = 0.1 * PEAK
  np.testing.assert_allclose([float(s(t)) for t in (0, 5, 10, 60, 110, 500)],
                             [0.0, PEAK / 2, PEAK, (PEAK + end) / 2, end, end], rtol=1e-5, atol=1e-7)
  explicit = _schedule("warmup_cosine", total=1000, warmup_steps=10, decay_steps=110, end_lr_factor=0.1)
  np.testing.assert_allclose(float(explicit(60)), (PEAK + end) / 2, rtol=1e-5)


def test_linear_warmup():
  s = _schedule("linear_warmup", warmup_steps=10)
  np.testing.assert_allclose([float(s(t)) for t in (0, 5, 10, 50, 10_000)], [0.0, PEAK / 2, PEAK, PEAK, PEAK],
                             rtol=1e-6)


def test_step_decay():
  s = _schedule("step_decay", warmup_steps=0, decay_every=10, decay_rate=0.5)
  np.testing.assert_allclose([float(s(t)) for t in (0, 9, 10, 19, 25, 30)],
                             [PEAK, PEAK, PEAK / 2, PEAK / 2, PEAK / 4, PEAK / 8], rtol=1e-6)
  warm = _schedule("step_decay", warmup_steps=4, decay_every=10, decay_rate=0.5)
  np.testing.assert_allclose([float(warm(t)) for t in (0, 2, 4, 13, 14)], [0, PEAK / 2, PEAK, PEAK, PEAK / 2],
                             rtol=1e-6)


def test_cosine_restarts():
  s = _schedule("cosine_restarts", total=100, warmup_steps=0, restart_every=20, end_lr_factor=0.0)
  np.testing.assert_allclose([float(s(t)) for t in (0, 10, 20, 30, 40, 90)],
                             [PEAK, PEAK / 2, PEAK, PEAK / 2, PEAK, PEAK / 2], rtol=1e-5, atol=1e-7)
  assert float(s(19)) < 0.01 * PEAK  # the end of a cycle, just before the restart
  warm = _schedule("cosine_restarts", total=100, warmup_steps=5, restart_every=20)
  np.testing.assert_allclose([float(warm(t)) for t in (0, 5, 20, 25)], [0.0, PEAK, 0.0, PEAK], atol=1e-6)


def test_unknown_schedule_and_optimizer_raise():
  with pytest.raises(ValueError, match="choose one of"):
    _schedule("nope")
  with pytest.raises(ValueError, match="choose one of"):  # built lazily, by inject_hyperparams' init
    make_optimizer(OptimConfig(name="nope"), optax.constant_schedule(0.1)).init(_params())
  with pytest.raises(ValueError, match="accumulate"):
    make_optimizer(OptimConfig(name="sgd", accumulate=0), optax.constant_schedule(0.1))


# -- optimizers -------------------------------------------------------------------


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


REFERENCES = {
    "adam": lambda c: optax.adam(c.lr, b1=c.b1, b2=c.b2, eps=c.eps),
    "adamw": lambda c: optax.adamw(c.lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                                   mask=_decay_mask),
    "sgd": lambda c: optax.sgd(c.lr, momentum=c.momentum, nesterov=c.nesterov),
    "lion": lambda c: optax.lion(c.lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay, mask=_decay_mask),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_optax(name):
  cfg = OptimConfig(name=name, lr=0.01, weight_decay=0.05 if name in ("adamw", "lion") else 0.0, b2=0.99)
  ours, _ = _run(make_optimizer(cfg, optax.constant_schedule(cfg.lr)))
  reference, _ = _run(REFERENCES[name](cfg))
  chex.assert_trees_all_close(ours, reference, rtol=1e-6, atol=1e-7)
  assert not np.allclose(ours["decoder"]["kernel"], _params()["decoder"]["kernel"])


def test_sgd_is_minus_lr_times_gradient():
  cfg = OptimConfig(name="sgd", lr=0.1, momentum=0.0)
  params, _ = _run(make_optimizer(cfg, optax.constant_schedule(cfg.lr)), num_steps=1)
  chex.assert_trees_all_close(params, jax.tree.map(lambda p, g: p - 0.1 * g, _params(), _grads(0)), rtol=1e-6)


def test_adamw_decays_matrices_not_biases():
  cfg = OptimConfig(name="adamw", lr=0.1, weight_decay=0.5)
  tx = make_optimizer(cfg, optax.constant_schedule(cfg.lr))
  params = _params()
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  chex.assert_trees_all_close(updates["decoder"]["kernel"], -0.1 * 0.5 * params["decoder"]["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(updates["decoder"]["bias"], 0.0)


def test_coupled_weight_decay_for_adam():
  cfg = OptimConfig(name="adam", lr=0.01, weight_decay=0.1)
  ours, _ = _run(make_optimizer(cfg, optax.constant_schedule(cfg.lr)))
  reference, _ = _run(optax.chain(optax.add_decayed_weights(0.1, mask=_decay_mask), optax.adam(0.01)))
  chex.assert_trees_all_close(ours, reference, rtol=1e-6, atol=1e-7)


# -- freeze, accumulate, clip, live lr ----------------------------------------------


def test_freeze_leaves_matching_params_unchanged():
  cfg = OptimConfig(name="adamw", lr=0.1, weight_decay=0.1, freeze=["^encoder/"])
  labels = freeze_labels(_params(), cfg.freeze)
  assert labels == {"encoder": {"kernel": "frozen", "bias": "frozen"}, "decoder": {"kernel": "train", "bias": "train"}}
  params, _ = _run(make_optimizer(cfg, optax.constant_schedule(cfg.lr)), num_steps=4)
  chex.assert_trees_all_equal(params["encoder"], _params()["encoder"])
  assert not np.allclose(params["decoder"]["kernel"], _params()["decoder"]["kernel"])
  assert not np.allclose(params["decoder"]["bias"], _params()["decoder"]["bias"])


def test_freeze_by_leaf_name_pattern():
  cfg = OptimConfig(name="sgd", lr=0.1, freeze=["bias$"])
  params, _ = _run(make_optimizer(cfg, optax.constant_schedule(cfg.lr)), num_steps=2)
  for module in ("encoder", "decoder"):
    np.testing.assert_array_equal(params[module]["bias"], _params()[module]["bias"])
    assert not np.allclose(params[module]["kernel"], _params()[module]["kernel"])


def _regression_loss(params, x, y):
  hidden = jnp.tanh(x @ params["encoder"]["kernel"] + params["encoder"]["bias"])
  prediction = hidden @ params["decoder"]["kernel"] + params["decoder"]["bias"]
  return jnp.mean(jnp.square(prediction - y))


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_accumulate_equals_one_step_on_the_k_times_larger_batch(name):
  k, micro = 4, 6
  x = jax.random.normal(jax.random.PRNGKey(1), (k * micro, 4))
  y = jax.random.normal(jax.random.PRNGKey(2), (k * micro, 2))
  grad = jax.jit(jax.grad(_regression_loss))
  apply = jax.jit(lambda state, grads: state.apply_gradients(grads))
  schedule = optax.constant_schedule(0.05)

  big = TrainState.create(params=_params(), tx=make_optimizer(OptimConfig(name=name, lr=0.05), schedule),
                          rng=jax.random.PRNGKey(0))
  big = apply(big, grad(big.params, x, y))

  acc = TrainState.create(params=_params(), tx=make_optimizer(OptimConfig(name=name, lr=0.05, accumulate=k), schedule),
                          rng=jax.random.PRNGKey(0))
  for i in range(k):
    sl = slice(i * micro, (i + 1) * micro)
    acc = apply(acc, grad(acc.params, x[sl], y[sl]))
    if i < k - 1:  # no update until the k-th micro-step
      chex.assert_trees_all_equal(acc.params, _params())
  chex.assert_trees_all_close(acc.params, big.params, rtol=1e-5, atol=1e-6)
  assert not np.allclose(big.params["decoder"]["kernel"], _params()["decoder"]["kernel"])


def test_optimizer_steps_counts_updates():
  assert optimizer_steps(100, 1) == 100
  assert optimizer_steps(100, 4) == 25
  assert optimizer_steps(3, 4) == 1


def test_clipping_limits_the_global_norm():
  cfg = OptimConfig(name="sgd", lr=1.0, momentum=0.0, clip_norm=0.5)
  tx = make_optimizer(cfg, optax.constant_schedule(1.0))
  params = _params()
  big = jax.tree.map(lambda g: 100.0 * g, _grads(0))
  assert float(optax.global_norm(big)) > 10
  updates, _ = tx.update(big, tx.init(params), params)
  np.testing.assert_allclose(float(optax.global_norm(updates)), 0.5, rtol=1e-5)
  # Direction kept: the clipped update is the gradient scaled down.
  scale = 0.5 / float(optax.global_norm(big))
  chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -scale * g, big), rtol=1e-5)
  # Below the threshold nothing changes.
  small = jax.tree.map(lambda g: 1e-3 * g, _grads(0))
  updates, _ = tx.update(small, tx.init(params), params)
  chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -g, small), rtol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"clip_norm": 1.0}, {"freeze": ["^encoder/"]}, {"accumulate": 2},
                                   {"clip_norm": 1.0, "freeze": ["bias"], "accumulate": 3}])
def test_current_learning_rate_reads_the_live_lr(extra):
  schedule = _schedule("linear_warmup", warmup_steps=10)
  cfg = OptimConfig(name="adamw", lr=PEAK, **extra)
  tx = make_optimizer(cfg, schedule)
  k = cfg.accumulate
  params = _params()
  state = tx.init(params)
  update = jax.jit(tx.update)
  seen = []
  for step in range(6 * k):
    updates, state = update(_grads(step), state, params)
    params = optax.apply_updates(params, updates)
    seen.append(float(current_learning_rate(state)))
  # After the n-th optimizer update, the state holds the lr that update used: schedule(n - 1).
  updates_done = [(i + 1) // k for i in range(6 * k)]
  expected = [float(schedule(max(n - 1, 0))) for n in updates_done]
  np.testing.assert_allclose(seen, expected, rtol=1e-6)
  assert seen[-1] > seen[0]


def test_train_step_reports_the_lr_it_used():
  from jaxtrain.core.step import make_train_step

  schedule = _schedule("linear_warmup", warmup_steps=10)
  tx = make_optimizer(OptimConfig(name="sgd", lr=PEAK), schedule)

  def loss_fn(params, model_state, batch, rng, train):
    loss = _regression_loss(params, batch["x"], batch["y"])
    return loss, ({}, model_state)

  step = jax.jit(make_train_step(loss_fn))
  state = TrainState.create(params=_params(), tx=tx, rng=jax.random.PRNGKey(0))
  batch = {"x": jnp.ones((4, 4)), "y": jnp.zeros((4, 2))}
  lrs = []
  for _ in range(4):
    state, metrics = step(state, batch)
    lrs.append(float(metrics["lr"]))
  np.testing.assert_allclose(lrs, [float(schedule(t)) for t in range(4)], rtol=1e-6)
  assert int(state.step) == 4
