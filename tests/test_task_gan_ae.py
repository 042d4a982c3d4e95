"""Task gan_ae on digits: reconstruction improves while the discriminator stays
in the game, each optimizer follows its own schedule, the discriminator's state
is checkpointed (a run continued from a checkpoint ends where the uninterrupted
one does), both update orders do what they say, and the guard keeps the
discriminator's state with the rest on a skipped step."""

from __future__ import annotations

import csv
import shutil

import jax
import numpy as np
import pytest

import jaxtrain
from jaxtrain.config.schema import OptimConfig, ScheduleConfig
from jaxtrain.config.validate import validate
from jaxtrain.core.guard import guarded
from jaxtrain.core.optim import make_optimizer, make_schedule
from jaxtrain.core.state import init_state_fn
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.registry import task_class

from _helpers import events_named, short_overrides

STEPS = 200
RESUME_AT = 100
GEN_LR, DISC_LR = 1e-3, 2e-3
# The generator warms up and decays (the run's schedule group); the
# discriminator warms up over a different span and then stays constant.
SCHEDULES = ["schedule=warmup_cosine", "schedule.warmup_steps=40", f"optim.lr={GEN_LR}",
             "task.disc_schedule.name=linear_warmup", "task.disc_schedule.warmup_steps=90",
             f"task.disc_optim.lr={DISC_LR}"]


def _overrides(run_dir, steps=STEPS, *extra):
  # Few checkpoints: saves are slow on 8 fake devices.
  return ["task=gan_ae", *short_overrides(run_dir, steps, "trainer.eval_every=50", f"checkpoint.every={RESUME_AT}",
                                          "checkpoint.keep=5"), *SCHEDULES, *extra]


def _rows(run_dir, split):
  with (run_dir / "facts" / "scalars.csv").open(newline="") as f:
    return [r for r in csv.DictReader(f) if r["split"] == split]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("gan") / "run"
  return jaxtrain.run(jaxtrain.compose(_overrides(run_dir)))


def test_reconstruction_improves_and_discriminator_neither_collapses_nor_wins(gan_run):
  evals = _rows(gan_run.run_dir, "val")
  first, last = float(evals[0]["mse"]), gan_run.summary["final_metrics"]["val/mse"]
  assert last < 0.5 * first, (first, last)
  d_acc = gan_run.summary["final_metrics"]["val/d_acc"]
  assert 0.5 < d_acc < 1.0, d_acc
  train = _rows(gan_run.run_dir, "train")
  assert all(np.isfinite(float(r[k])) for r in train for k in ("loss", "mse", "g_adv", "d_loss", "d_acc"))
  assert gan_run.summary["skipped_updates"] == 0


def test_each_optimizer_follows_its_own_schedule(gan_run):
  gen = make_schedule(ScheduleConfig(name="warmup_cosine", warmup_steps=40), GEN_LR, STEPS)
  disc = make_schedule(ScheduleConfig(name="linear_warmup", warmup_steps=90), DISC_LR, STEPS)
  rows = _rows(gan_run.run_dir, "train")
  assert len(rows) == STEPS // 10
  for row in rows:
    used = int(row["step"]) - 1  # the row at step n holds the rate of the n-th update
    np.testing.assert_allclose(float(row["lr"]), gen(used), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(row["disc_lr"]), disc(used), rtol=1e-5, atol=1e-9)
  assert int(jax.device_get(gan_run.state.extra["disc_opt_state"].count)) == STEPS


def test_continuing_from_a_checkpoint_ends_where_the_uninterrupted_run_does(gan_run, tmp_path):
  """The step-100 checkpoint holds the discriminator and its optimizer state: a run continued from it
  (in a fresh run directory) ends bitwise where the uninterrupted run ends."""
  run_dir = tmp_path / "continued"
  shutil.copytree(gan_run.run_dir / "checkpoints" / str(RESUME_AT), run_dir / "checkpoints" / str(RESUME_AT))
  continued = jaxtrain.run(jaxtrain.compose(_overrides(run_dir)))
  assert [s["step"] for s in events_named(run_dir, "on_start")] == [RESUME_AT]
  assert continued.params_fingerprint == gan_run.params_fingerprint
  same = jax.tree.map(np.array_equal, jax.device_get(continued.state.extra), jax.device_get(gan_run.state.extra))
  assert all(jax.tree.leaves(same))
  assert continued.summary["final_metrics"] == gan_run.summary["final_metrics"]


# -- the step itself, on one device ------------------------------------------


@pytest.fixture(scope="module")
def one_device():
  """Both update orders' tasks and guarded, compiled steps; one shared initial state (the order does
  not change it) and a batch."""
  batch = {"x": np.random.default_rng(0).uniform(size=(32, 64)).astype(np.float32)}
  tasks = {}
  for update in ("alternating", "simultaneous"):
    tasks[update] = task_class("gan_ae")(validate(jaxtrain.compose(["task=gan_ae", f"task.update={update}"])).task,
                                         batch)
    tasks[update].total_steps = 100
  tx = make_optimizer(OptimConfig(name="adam", lr=1e-3), make_schedule(ScheduleConfig(name="constant"), 1e-3, 100))
  init = init_state_fn(tasks["alternating"].init, tx, init_extra=tasks["alternating"].init_extra)
  steps = {update: jax.jit(guarded(task.train_step())) for update, task in tasks.items()}
  return tasks, steps, jax.jit(init)(jax.random.PRNGKey(0)), batch


def test_alternating_judges_with_the_updated_discriminator_simultaneous_with_the_old(one_device):
  _, steps, state, batch = one_device
  alt_next, alt_metrics = steps["alternating"](state, batch)
  sim_next, sim_metrics = steps["simultaneous"](state, batch)
  assert int(alt_next.step) == int(sim_next.step) == 1
  assert float(alt_metrics["skipped"]) == float(sim_metrics["skipped"]) == 0.0
  # Both orders train the discriminator on the same reconstructions ...
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), alt_next.extra, sim_next.extra)
  np.testing.assert_allclose(alt_metrics["d_loss"], sim_metrics["d_loss"], rtol=1e-6)
  # ... but only the alternating generator step sees the discriminator's update.
  assert float(alt_metrics["g_adv"]) != float(sim_metrics["g_adv"])
  assert not np.array_equal(jax.tree.leaves(alt_next.params)[0], jax.tree.leaves(sim_next.params)[0])


def test_views(one_device):
  tasks, _, state, batch = one_device
  task = tasks["alternating"]
  assert task.supports("reconstruct") and task.supports("embed") and not task.supports("sample")
  reconstruction, code = jax.jit(lambda s, b: (task.reconstruct(s.params, s.model_state, b, s.rng),
                                               task.embed(s.params, s.model_state, b)))(state, batch)
  assert reconstruction.shape == (32, 64) and code.shape == (32, 16)


def test_guard_skips_both_players_on_a_bad_step(one_device):
  _, steps, state, batch = one_device
  step = steps["alternating"]
  bad = {"x": batch["x"].copy()}
  bad["x"][0, 0] = np.nan
  kept, metrics = step(state, bad)
  assert float(metrics["skipped"]) == 1.0 and int(kept.step) == 1
  for new, old in ((kept.params, state.params), (kept.extra, state.extra), (kept.opt_state, state.opt_state)):
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, new, old)))
  moved, metrics = step(state, batch)
  assert float(metrics["skipped"]) == 0.0
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, moved.extra["disc_params"],
                                              state.extra["disc_params"])))


def test_bad_update_choice_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match=r"task.update='sideways': choose one of: alternating, simultaneous"):
    jaxtrain.run(jaxtrain.compose(_overrides(tmp_path / "run", 10, "task.update=sideways")))


def test_every_key_of_the_discriminator_optimizer_can_be_overridden():
  config = validate(jaxtrain.compose(["task=gan_ae", "task.disc_optim.clip_norm=1.0", "task.disc_optim.accumulate=2",
                                      "task.disc_schedule.decay_steps=50"])).task
  assert (config.disc_optim.clip_norm, config.disc_optim.accumulate, config.disc_schedule.decay_steps) == (1.0, 2, 50)
