"""Mixtures and curricula: measured dataset fractions per window of batches follow the configured weights."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrain.config.schema import CurriculumConfig, DataConfig, MixtureConfig
from jaxtrain.data import pipeline
from jaxtrain.data.sampling import ShuffledBatchIndices
from jaxtrain.data.sources import as_source
from jaxtrain.errors import ConfigError

BATCH = 64


def _sets(sizes=(300, 200, 100), width=4):
  """Datasets whose x rows say (dataset, example), so every batch row can be traced back."""
  return [pipeline.TrainSet(f"d{k}", as_source({"x": np.stack([np.full(n, k), np.arange(n)], 1).repeat(width // 2, 1)
                                                    .astype(np.float32)}))
          for k, n in enumerate(sizes)]


def _dataset_column(cfg: DataConfig, sets, num_batches: int) -> np.ndarray:
  ds = pipeline.train_pipeline(sets, cfg).dataset
  return np.stack([ds[i]["dataset"] for i in range(num_batches)])  # [batches, B]


def weights_at(step: int) -> list[float]:
  """A user curriculum (data.curriculum.function): dataset 2 only from step 100 on."""
  return [1.0, 1.0, 0.0] if step < 100 else [0.0, 0.0, 1.0]


def _within(measured: float, expected: float, draws: int) -> bool:
  """Within 5 binomial standard deviations (a fixed seed; the bound only guards against bugs)."""
  return abs(measured - expected) <= 5 * np.sqrt(max(expected * (1 - expected), 1e-4) / draws) + 1e-9


def test_linear_curriculum_fractions_follow_the_ramp():
  cfg = DataConfig(batch_size=BATCH, curriculum=CurriculumConfig(
      kind="linear", start_weights=[0.8, 0.2, 0.0], end_weights={"d0": 0.1, "d2": 0.9}, ramp_steps=1000))
  column = _dataset_column(cfg, _sets(), 1200)
  window = 100
  for start in range(0, 1200, window):
    steps = np.arange(start, start + window)
    t = np.minimum(steps / 1000, 1.0)[:, None]
    expected = ((1 - t) * [0.8, 0.2, 0.0] + t * [0.1, 0.0, 0.9]).mean(axis=0)
    block = column[start:start + window]
    for k in range(3):
      assert _within((block == k).mean(), expected[k], block.size), (start, k, (block == k).mean(), expected[k])


def test_staged_and_function_curricula_switch_at_their_steps():
  staged = DataConfig(batch_size=BATCH, curriculum=CurriculumConfig(
      kind="staged", stages=[{"until_step": 50, "weights": [1, 0, 0]}, {"until_step": None, "weights": [0, 1, 1]}]))
  column = _dataset_column(staged, _sets(), 100)
  assert (column[:50] == 0).all()
  assert (column[50:] != 0).all() and _within((column[50:] == 1).mean(), 0.5, column[50:].size)

  function = DataConfig(batch_size=BATCH, curriculum=CurriculumConfig(
      kind="function", function="test_mixture_curriculum:weights_at"))
  column = _dataset_column(function, _sets(), 120)
  assert set(np.unique(column[:100])) == {0, 1} and (column[100:] == 2).all()


def test_default_weights_are_proportional_to_size_and_streams_visit_each_example_once_per_epoch():
  sets = _sets()
  ds = pipeline.train_pipeline(sets, DataConfig(batch_size=BATCH)).dataset
  batches = [ds[i] for i in range(60)]
  x = np.concatenate([b["x"] for b in batches])
  assert np.array_equal(x[:, 0], np.concatenate([b["dataset"] for b in batches]))
  for k, n in enumerate((300, 200, 100)):
    assert _within((x[:, 0] == k).mean(), n / 600, len(x))
    visits = np.bincount(x[x[:, 0] == k, -1].astype(int), minlength=n)
    # Each dataset's own stream visits its examples once per epoch: visit counts differ by at most one.
    assert visits.sum() > n and visits.max() - visits.min() <= 1


def test_a_single_dataset_keeps_the_plain_shuffled_order():
  """One dataset, uniform sampling: batch i is exactly ShuffledBatchIndices' batch i (runs stay reproducible)."""
  arrays = {"x": np.arange(100, dtype=np.float32)[:, None]}
  ds = pipeline.train_dataset(arrays, DataConfig(batch_size=16, shuffle_seed=3))
  reference = ShuffledBatchIndices(100, 16, seed=3)
  for i in (0, 6, 7, 40):
    assert np.array_equal(ds[i]["x"][:, 0], reference[i].astype(np.float32))
    assert set(ds[i]) == {"x"}  # no dataset key for a single dataset


def test_the_same_seed_gives_the_same_batches_and_bad_weights_fail_in_one_line():
  cfg = DataConfig(batch_size=BATCH, mixture=MixtureConfig(weights=[1, 2, 3]))
  a, b = (pipeline.train_pipeline(_sets(), cfg).dataset for _ in range(2))
  assert all(np.array_equal(a[i]["x"], b[i]["x"]) for i in (0, 1, 1500))  # 1500: past the first chunk
  with pytest.raises(ConfigError, match=r"data.mixture.weights: 2 weights for 3 datasets"):
    pipeline.train_pipeline(_sets(), DataConfig(mixture=MixtureConfig(weights=[1, 2])))
  with pytest.raises(ConfigError, match=r"unknown dataset\(s\) nope"):
    pipeline.train_pipeline(_sets(), DataConfig(mixture=MixtureConfig(weights={"nope": 1})))
  with pytest.raises(ConfigError, match="cannot share a batch.*group_by_dataset"):
    pipeline.train_pipeline(_sets()[:1] + _sets(width=6)[1:], DataConfig(batch_size=BATCH))
