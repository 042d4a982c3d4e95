"""Task `multidataset` on synthetic recording sessions: the generator, a short grouped run with
per-dataset correlations and one train-step compilation, and the readout regularisers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.config.schema import DataConfig
from jaxtrain.data import recordings
from jaxtrain.data.pipeline import train_pipeline
from jaxtrain.data.sources import load_datasets
from jaxtrain.errors import ConfigError
from jaxtrain.evaluators.neural_correlation import masked_correlations
from jaxtrain.tasks.multidataset import MultiDatasetConfig, MultiDatasetTask, readout_penalty
from tests._helpers import short_overrides

SMALL = dict(trials=(60, 90), neurons=(5, 12), held_out=40, pool=200)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
  """Three small sessions (5..12 neurons, 60..90 trials each)."""
  return recordings.generate(tmp_path_factory.mktemp("recordings"), sessions=3, seed=3, **SMALL)


def test_generator_is_deterministic_and_writes_dataset_yamls(sessions, tmp_path):
  again = recordings.generate(tmp_path / "again", sessions=3, seed=3, **SMALL)
  files = sorted(p.relative_to(sessions) for p in sessions.rglob("*") if p.is_file())
  assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
  for path in files:
    assert (sessions / path).read_bytes() == (again / path).read_bytes(), path
  other = recordings.generate(tmp_path / "other", sessions=1, seed=4, **SMALL)
  assert (other / "files/session_00.npz").read_bytes() != (sessions / "files/session_00.npz").read_bytes()

  datasets = load_datasets(DataConfig(name="dataset_dir", dataset_configs_path=str(sessions)))
  assert [d.name for d in datasets] == ["session_00", "session_01", "session_02"]
  for index, dataset in enumerate(datasets):
    val = dataset.val.get_batch(np.arange(len(dataset.val)))
    assert len(dataset.val) == 40 and 60 <= len(dataset.train) <= 90
    assert val["x"].shape == (40, 16, 16, 1) and val["responses"].shape == (40, 12)
    recorded = int(val["neuron_mask"][0].sum())
    assert recorded == dataset.options["neurons"] and 5 <= recorded <= 12
    assert np.all(val["dataset"] == index)
    assert np.all(val["rates"][:, recorded:] == 0) and np.all(val["rates"][:, :recorded] > 0)
    assert np.all((val["contrast"] >= 0.2) & (val["contrast"] <= 1.0))
  # Held-out stimuli are shared by the sessions; their neurons differ.
  first, second = (d.val.get_batch(np.arange(40)) for d in datasets[:2])
  np.testing.assert_array_equal(first["x"], second["x"])


def test_grouped_batches_each_come_from_one_session(sessions):
  cfg = DataConfig(name="dataset_dir", dataset_configs_path=str(sessions), batch_size=16, group_by_dataset=True)
  cfg.sampling.kind, cfg.sampling.weight_key = "weighted", "contrast"
  stream = train_pipeline(load_datasets(cfg), cfg).dataset
  seen = set()
  for i in range(12):
    batch = stream[i]
    assert len(set(batch["dataset"].tolist())) == 1
    assert np.all(batch["dataset"] == batch["dataset"][0])
    seen.add(int(batch["dataset"][0]))
  assert seen == {0, 1, 2}


@pytest.fixture(scope="module")
def short_run(sessions, tmp_path_factory):
  """The task's own config (curriculum, contrast-weighted sampling) for 30 steps on the small sessions."""
  run_dir = tmp_path_factory.mktemp("multidataset") / "run"
  overrides = short_overrides(run_dir, 30, "task=multidataset", f"data.dataset_configs_path={sessions}",
                              "data.batch_size=16", "data.curriculum.ramp_steps=10", "trainer.eval_every=30",
                              "checkpoint.every=30", "schedule.warmup_steps=5", "db.enabled=false")
  return jaxtrain.run(jaxtrain.compose(overrides))


def test_short_run_compiles_once_and_reports_per_session_correlation(short_run):
  summary = short_run.summary
  assert summary["train_step_compilations"] == 1
  final = summary["final_metrics"]
  names = ["session_00", "session_01", "session_02"]
  for name in names:
    assert -1.0 <= final[f"val/corr/{name}"] <= 1.0
  assert final["val/corr/mean"] == pytest.approx(np.mean([final[f"val/corr/{n}"] for n in names]))
  assert math.isfinite(final["val/loss"]) and final["val/readout_penalty"] > 0  # readout_smoothness is on
  # One stacked head per session, padded to the largest neuron count of the data.
  assert short_run.state.params["readout"]["spatial"].shape == (3, 12, 16, 16)


def _task(**options):
  batch = {"x": np.zeros((4, 16, 16, 1), np.float32), "responses": np.ones((4, 6), np.float32),
           "neuron_mask": np.ones((4, 6), np.float32), "dataset": np.array([0, 0, 1, 1], np.int32)}
  task = MultiDatasetTask(MultiDatasetConfig(**options), batch)
  task.dataset_names = ("a", "b")
  return task, batch


def test_readout_regularisers_add_their_penalty_to_the_loss():
  task, batch = _task()
  params, _ = task.init(jax.random.PRNGKey(0))
  base, (metrics, _) = jax.jit(task.loss, static_argnums=4)(params, {}, batch, None, True)
  assert float(metrics["readout_penalty"]) == 0.0
  readout = params["readout"]
  spatial, weights = np.asarray(readout["spatial"]), np.asarray(readout["weights"])
  expected = {
      "readout_l1": np.abs(spatial).sum((-2, -1)).mean() + np.abs(weights).sum(-1).mean(),
      "readout_l2": np.square(spatial).sum((-2, -1)).mean() + np.square(weights).sum(-1).mean(),
  }
  for key, value in expected.items():
    regularised, _ = _task(**{key: 0.5})
    loss, (metrics, _) = jax.jit(regularised.loss, static_argnums=4)(params, {}, batch, None, True)
    np.testing.assert_allclose(float(loss) - float(base), 0.5 * value, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["response_loss"]), float(base), rtol=1e-6)


def test_smoothness_penalises_rough_readout_masks_more_than_smooth_ones():
  yy, xx = np.mgrid[0:16, 0:16]
  smooth = np.exp(-((yy - 8.0)**2 + (xx - 8.0)**2) / (2 * 3.0**2))
  rough = np.random.default_rng(0).permutation(smooth.reshape(-1)).reshape(16, 16)  # same values, shuffled
  weights = jnp.ones((1, 1, 8))

  @jax.jit
  def penalty_of(mask):
    return readout_penalty({"spatial": mask[None, None], "weights": weights}, 0.0, 0.0, 1.0)

  def penalty(mask):
    return float(penalty_of(jnp.asarray(mask, jnp.float32)))

  assert penalty(rough) > 10 * penalty(smooth) > 0
  assert penalty(np.zeros((16, 16))) == 0.0


def test_masked_correlations_are_pearson_per_recorded_neuron():
  rng = np.random.default_rng(0)
  target = rng.random((50, 4))
  predicted = target + rng.normal(0, 0.3, (50, 4))
  mask = np.tile([1.0, 1.0, 1.0, 0.0], (50, 1))  # the last neuron is padding
  expected = [np.corrcoef(predicted[:, n], target[:, n])[0, 1] for n in range(3)]
  np.testing.assert_allclose(masked_correlations(predicted, target, mask), expected, rtol=1e-10)


def test_bad_options_are_one_line_config_errors():
  with pytest.raises(ConfigError, match="task.loss='huber'"):
    _task(loss="huber")
  with pytest.raises(ConfigError, match="task.readout_l1=-1"):
    _task(readout_l1=-1.0)
