"""Hard-example mining with a curriculum: a run resumed mid-epoch draws (and augments) the identical batches."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jaxtrain.actions.base import Bookkeeping, LoopContext
from jaxtrain.actions.mining import UpdateMiningTable
from jaxtrain.config.schema import CurriculumConfig, DataConfig, MiningConfig
from jaxtrain.data import pipeline
from jaxtrain.data.augment import dihedral_transform
from jaxtrain.data.mining import INDEX_METRIC, LOSS_METRIC
from jaxtrain.data.sources import as_source
from jaxtrain.errors import ConfigError

from _helpers import checkpoint_steps, short_overrides

STEPS, SAVE_AT = 60, 26  # 26: inside an epoch and between two mining-table updates


def _config() -> DataConfig:
  # Read threads and device prefetch on: the batches must not depend on how far the pipeline reads ahead.
  return DataConfig(batch_size=8, read_threads=2, prefetch=4, device_prefetch=2,
                    curriculum=CurriculumConfig(kind="linear", start_weights=[0.9, 0.1], end_weights=[0.2, 0.8],
                                                ramp_steps=40),
                    mining=MiningConfig(enabled=True, every=4, ema=0.5, mix=0.8),
                    augment=[{"name": "gaussian_noise", "std": 0.1}])


def _pipeline_sets():
  """Two datasets whose x is each example's id over both (0-39, then 40-63)."""
  sizes, offsets = (40, 24), (0, 40)
  return [pipeline.TrainSet(f"d{k}", as_source({"x": (offsets[k] + np.arange(n, dtype=np.float32))[:, None]}))
          for k, n in enumerate(sizes)]


def _pipeline():
  return pipeline.train_pipeline(_pipeline_sets(), _config())


def _fake_losses(index: np.ndarray) -> np.ndarray:
  """Every fifth example is hard."""
  return np.where(index % 5 == 0, 1.0, 0.01).astype(np.float32)


def _train(state: str | None = None, start: int = 0):
  """Consumes batches to STEPS as the loop does, feeding fake per-example losses back through
  the mining action; returns (index batches, augmented x batches, iterator state at SAVE_AT)."""
  train = _pipeline()
  it = pipeline.device_iterator(train.dataset, lambda batch: batch, _config(), train.mining_table)
  if state is not None:
    it.set_state(json.loads(state))
  action = UpdateMiningTable(train.mining_table)
  ctx = LoopContext(step=start, total_steps=STEPS, steps_per_epoch=8, state=None, train_metrics=None,
                    data_iterator=it, book=Bookkeeping())
  indices, xs, saved = [], [], None
  while ctx.step < STEPS:
    batch = next(it)
    ctx.train_metrics = {"loss": 0.0, LOSS_METRIC: _fake_losses(batch["index"]), INDEX_METRIC: batch["index"]}
    ctx.step += 1
    action(ctx)
    assert set(ctx.train_metrics) == {"loss"}  # the logger only ever sees scalars
    indices.append(batch["index"])
    xs.append(batch["x"][:, 0])
    if ctx.step == SAVE_AT:
      saved = json.dumps(it.get_state())  # what Grain's checkpoint handler writes
  it.close()
  return np.stack(indices), np.stack(xs), saved


def test_resumed_pipeline_repeats_the_batches_and_the_augmentation():
  indices, xs, state = _train()
  resumed_indices, resumed_xs, _ = _train(state, start=SAVE_AT)
  assert np.array_equal(resumed_indices, indices[SAVE_AT:])
  assert np.array_equal(resumed_xs, xs[SAVE_AT:])
  # The augmentation really changed the inputs (x holds the example's own index before the noise).
  assert 0 < np.abs(xs - indices).mean() < 0.2
  # Mining: hard examples (a fifth of all) fill most rows once the table knows them.
  hard_share = (indices[30:] % 5 == 0).mean()
  assert hard_share > 0.5, hard_share
  assert (indices[:8] % 5 == 0).mean() < 0.5  # version 0: nothing known yet


def test_dihedral_transform_gives_the_eight_board_symmetries_and_bad_mining_values_fail():
  board = np.arange(9).reshape(1, 3, 3)
  images = {dihedral_transform(board, k).tobytes() for k in range(8)}
  assert len(images) == 8
  with pytest.raises(ConfigError, match=r"data.mining.mix=1.5: must be between 0 and 1"):
    pipeline.train_pipeline(_pipeline_sets(), DataConfig(batch_size=8, mining=MiningConfig(enabled=True, mix=1.5)))


@pytest.fixture(scope="module")
def mining_run(tmp_path_factory):
  """A 12-step run with mining (table update every 2 steps) and checkpoints at 6 and 12."""
  import jaxtrain

  run_dir = tmp_path_factory.mktemp("mining") / "run"
  overrides = short_overrides(run_dir, 12, "checkpoint.every=6", "trainer.eval_every=12", "trainer.log_every=3",
                              "data.mining.enabled=true", "data.mining.every=2", "data.batch_size=64",
                              "checkpoint.keep=2", "checkpoint.async_save=false")
  return run_dir, overrides, jaxtrain.run(jaxtrain.compose(overrides))


def test_a_run_resumed_with_mining_ends_with_the_same_params(mining_run):
  import jaxtrain

  run_dir, overrides, first = mining_run
  saved = json.loads(next((run_dir / "checkpoints" / "6" / "data").glob("process_0-of-1.json")).read_text())
  assert saved["mining"]["version"] == 3 and saved["mining"]["pending"]  # table and unfolded losses
  header = (run_dir / "facts" / "scalars.csv").read_text().splitlines()[0]
  assert "mining" not in header
  # Resume from step 6: the mining table comes back with the iterator, so steps 7-12 repeat exactly.
  shutil.rmtree(run_dir / "checkpoints" / "12")
  assert checkpoint_steps(run_dir) == {6}
  second = jaxtrain.run(jaxtrain.compose(overrides))
  assert second.summary["steps_this_session"] == 6
  assert second.params_fingerprint == first.params_fingerprint
