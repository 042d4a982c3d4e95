"""Weighted sampling from a weight column: frequencies match the weights, with and without replacement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jaxtrain.config.schema import DataConfig, SamplingConfig
from jaxtrain.data import pipeline
from jaxtrain.data.sources import as_source
from jaxtrain.errors import ConfigError

WEIGHTS = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 10.0], np.float32)


def _set(weights=WEIGHTS):
  return [pipeline.TrainSet("d", as_source({"x": np.arange(len(weights), dtype=np.float32)[:, None],
                                            "quality": weights}))]


def _drawn(kind: str, num_batches: int, batch_size: int = 8) -> np.ndarray:
  cfg = DataConfig(batch_size=batch_size, sampling=SamplingConfig(kind=kind, weight_key="quality"))
  ds = pipeline.train_pipeline(_set(), cfg).dataset
  return np.concatenate([ds[i]["x"][:, 0] for i in range(num_batches)]).astype(int)


def _chi_square_p(counts: np.ndarray, weights: np.ndarray) -> float:
  positive = weights > 0
  expected = counts[positive].sum() * weights[positive] / weights[positive].sum()
  return stats.chisquare(counts[positive], expected).pvalue


def test_with_replacement_frequencies_match_the_weights():
  drawn = _drawn("weighted", 500)
  counts = np.bincount(drawn, minlength=len(WEIGHTS))
  assert counts[4] == 0  # weight 0: never drawn
  assert _chi_square_p(counts, WEIGHTS) > 1e-3, counts


def test_without_replacement_each_example_once_per_epoch_heavier_ones_earlier():
  positive = np.flatnonzero(WEIGHTS > 0)
  epochs = 600
  drawn = _drawn("weighted_no_replacement", epochs * len(positive) // 8, batch_size=8)
  per_epoch = drawn[: len(drawn) // len(positive) * len(positive)].reshape(-1, len(positive))
  # Every epoch is a permutation of the examples with weight > 0.
  assert (np.sort(per_epoch, axis=1) == positive).all()
  # The first pick of an epoch is drawn with probability w / sum(w) (Efraimidis-Spirakis).
  first = np.bincount(per_epoch[:, 0], minlength=len(WEIGHTS))
  assert _chi_square_p(first, WEIGHTS) > 1e-3, first


def test_weighted_sampling_needs_a_valid_weight_column():
  with pytest.raises(ConfigError, match="needs data.sampling.weight_key"):
    pipeline.train_pipeline(_set(), DataConfig(batch_size=2, sampling=SamplingConfig(kind="weighted")))
  with pytest.raises(ConfigError, match="weight_key='nope': dataset 'd' has no such key"):
    pipeline.train_pipeline(_set(), DataConfig(batch_size=2, sampling=SamplingConfig(kind="weighted",
                                                                                     weight_key="nope")))
  with pytest.raises(ConfigError, match="must be finite and >= 0"):
    pipeline.train_pipeline(_set(np.array([1.0, -1.0], np.float32)),
                            DataConfig(batch_size=2, sampling=SamplingConfig(kind="weighted", weight_key="quality")))
