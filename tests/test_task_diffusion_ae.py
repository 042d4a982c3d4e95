"""Task diffusion_ae on digits, through the CLI with the default config shortened:
the denoising loss falls and reconstructions through the reverse process beat
the mean-image baseline by a clear margin. Also the noise schedules, the DDIM
sampler's fixed points and the task's one-line config errors."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.errors import ConfigError
from jaxtrain.models.denoiser import alpha_bars, ddim_sample

from _helpers import cli_env, read_summary, run_cli

STEPS = 300


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
  """The default config shortened, with a higher learning rate to make up for it, on one CPU device
  (on the suite's 8 fake devices this model trains ~4x slower)."""
  run_dir = tmp_path_factory.mktemp("diffusion") / "run"
  env = cli_env(XLA_FLAGS="")
  result = run_cli(["task=diffusion_ae", f"run.dir={run_dir}", f"trainer.steps={STEPS}", "trainer.eval_every=100",
                    "checkpoint.every=1000", "trainer.log_every=50", "logging.progress=none", "optim.lr=4e-3",
                    "schedule.warmup_steps=30"], cwd=run_dir.parent, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  with (run_dir / "facts" / "scalars.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  return read_summary(run_dir), rows


@pytest.mark.slow
def test_denoising_loss_falls(diffusion_run):
  summary, rows = diffusion_run
  train = [float(r["denoise_mse"]) for r in rows if r["split"] == "train"]
  evals = [float(r["denoise_mse"]) for r in rows if r["split"] == "val"]
  assert np.mean(train[-2:]) < 0.6 * np.mean(train[:2]), train
  assert evals[-1] < evals[0], evals
  assert summary["final_step"] == STEPS and summary["skipped_updates"] == 0


@pytest.mark.slow
def test_reverse_process_beats_the_mean_image(diffusion_run):
  summary, _ = diffusion_run
  final = summary["final_metrics"]
  assert final["val/recon_mse"] < 0.6 * final["val/mean_image_mse"], final


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noise_schedules_go_from_data_to_noise(schedule):
  alpha_bar = alpha_bars(schedule, 200)
  assert alpha_bar.shape == (200,) and alpha_bar.dtype == np.float32
  assert np.all(np.diff(alpha_bar) < 0) and alpha_bar[0] > 0.99 and alpha_bar[-1] < 0.01


def test_ddim_with_the_true_noise_recovers_the_data():
  """With a perfect noise predictor, deterministic DDIM maps x_T back to x_0 at any step count."""
  alpha_bar = jnp.asarray(alpha_bars("linear", 1000))
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 8), minval=-1.0, maxval=1.0)
  noise = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
  x_t = jnp.sqrt(alpha_bar[-1]) * x0 + jnp.sqrt(1.0 - alpha_bar[-1]) * noise

  def oracle(x, t):
    a = alpha_bar[t][:, None]
    return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)

  for steps in (1, 7, 50):
    np.testing.assert_allclose(jax.jit(lambda x: ddim_sample(oracle, x, alpha_bar, steps))(x_t), x0, atol=1e-3)


@pytest.mark.parametrize("override, message", [
    ("task.noise_schedule=quadratic", "task.noise_schedule='quadratic': choose one of: linear, cosine"),
    ("task.sample_steps=5000", "task.sample_steps=5000: must be between 1 and task.num_timesteps"),
])
def test_bad_choices_are_one_line(tmp_path, override, message):
  with pytest.raises(ConfigError, match=message):
    jaxtrain.run(jaxtrain.compose(["task=diffusion_ae", override, f"run.dir={tmp_path / 'run'}",
                                   "logging.progress=none"]))
