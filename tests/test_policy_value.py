"""task=policy_value on solved tic-tac-toe: minimax values of known positions, board symmetries that
map boards and policy targets alike, a split that keeps symmetry classes whole, short runs of the
quality-weighted and the hard-example-mining presets; benchmarks/input_pipeline.py in its smallest mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxtrain
from jaxtrain.config.schema import DataConfig
from jaxtrain.data import pipeline, tictactoe
from jaxtrain.data.augment import Augmenter
from jaxtrain.data.sources import load_datasets
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.policy_value import expected_calibration_error

from _helpers import short_overrides

X, O = 1, 2


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  """data=tictactoe's cache in a temporary directory (the file is generated there on first use)."""
  path = tmp_path_factory.mktemp("tictactoe_cache")
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(tictactoe.CACHE_ENV, str(path))
    yield path


@pytest.fixture(scope="module")
def solved():
  return tictactoe.solved_arrays()


def _lookup(solved):
  """board bytes -> row of the solved positions."""
  return {row.tobytes(): i for i, row in enumerate(solved["board"])}


def test_minimax_values_of_known_positions(solved):
  empty = (0,) * 9
  assert tictactoe.solve(empty)[0] == 0  # perfect play draws
  assert tictactoe.optimal_moves(empty) == list(range(9))  # and no first move loses
  # X X . / O O . / . . . with X to move: the win is at cell 2, one ply away.
  win_now = (X, X, 0, O, O, 0, 0, 0, 0)
  assert tictactoe.solve(win_now) == (1, 1)
  assert 2 in tictactoe.optimal_moves(win_now)
  # X X . / . O . / . . . with O to move: only the block at cell 2 keeps the draw.
  must_block = (X, X, 0, 0, O, 0, 0, 0, 0)
  assert tictactoe.solve(must_block)[0] == 0 and tictactoe.optimal_moves(must_block) == [2]
  # X in a corner, O on an edge next to it, X to move: X wins by force.
  assert tictactoe.solve((X, O, 0, 0, 0, 0, 0, 0, 0))[0] == 1
  # The dataset: every non-terminal position, targets from the side to move's view.
  assert len(solved["x"]) == 4520 and len(np.unique(solved["symmetry_class"])) == 627
  row = _lookup(solved)[np.array(win_now, np.int8).tobytes()]
  assert solved["value"][row] == 1 and solved["policy"][row, 2] > 0
  np.testing.assert_allclose(solved["policy"].sum(1), 1.0, rtol=1e-6)
  assert np.all(solved["policy"][solved["legal"] == 0] == 0)
  assert np.all(solved["quality"] > 0)


def test_symmetries_map_solved_positions_to_solved_positions(solved):
  lookup = _lookup(solved)
  sample = np.random.default_rng(0).choice(len(solved["x"]), 300, replace=False)
  batch = {key: solved[key][sample] for key in ("x", "legal", "policy", "value")}
  boards = solved["board"][sample].reshape(-1, 3, 3)
  for k in range(8):
    moved = tictactoe.board_symmetry(batch, np.full(len(sample), k))
    moved_boards = tictactoe.dihedral_transform(boards, k).reshape(-1, 9)
    rows = [lookup[b.astype(np.int8).tobytes()] for b in moved_boards]  # a reachable position again
    np.testing.assert_array_equal(moved["x"], solved["x"][rows])
    np.testing.assert_array_equal(moved["policy"], solved["policy"][rows])
    np.testing.assert_array_equal(moved["legal"], solved["legal"][rows])
    np.testing.assert_array_equal(moved["value"], solved["value"][rows])
    assert np.all(solved["symmetry_class"][rows] == solved["symmetry_class"][sample])
  # The registered augmentation: a symmetry per row, the same ones for the same generator.
  augment = Augmenter(["tictactoe_symmetry"])
  first = augment(batch, np.random.default_rng(5))
  again = augment(batch, np.random.default_rng(5))
  for key in batch:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["x"], batch["x"])


def test_split_keeps_symmetry_classes_together(cache_dir):
  splits = tictactoe.tictactoe(DataConfig(name="tictactoe", val_fraction=0.2, split_seed=0))
  assert (cache_dir / tictactoe.FILE_NAME).exists()
  train_classes, val_classes = set(splits.train["symmetry_class"]), set(splits.val["symmetry_class"])
  assert not train_classes & val_classes
  assert len(splits.train["x"]) + len(splits.val["x"]) == 4520
  assert 0.1 < len(splits.val["x"]) / 4520 < 0.3
  # Every rotation and reflection of a held-out position is held out too.
  val_boards = {tuple(int(c) for c in b.reshape(9)) for b in _boards_of(splits.val["x"])}
  for board in list(val_boards)[:50]:
    grid = np.array(board).reshape(1, 3, 3)
    for k in range(8):
      assert tuple(tictactoe.dihedral_transform(grid, k).reshape(9)) in val_boards


def _boards_of(planes):
  """[N, 3, 3, 2] planes (mover, opponent) -> [N, 9] cells with X=1, O=2."""
  mover_is_x = planes[..., 0].sum((1, 2)) == planes[..., 1].sum((1, 2))
  mover = np.where(mover_is_x, X, O)[:, None]
  flat = planes.reshape(-1, 9, 2)
  return flat[..., 0] * mover + flat[..., 1] * (3 - mover)


def test_expected_calibration_error():
  confidence = np.array([0.95, 0.95, 0.55, 0.55])
  assert expected_calibration_error(confidence, np.array([1.0, 1.0, 1.0, 0.0]), 10) == pytest.approx(0.05)
  assert expected_calibration_error(confidence, np.zeros(4), 10) == pytest.approx(0.75)


@pytest.mark.parametrize("preset, extra", [
    ("policy_value_quality", []),
    ("policy_value_mining", ["data.mining.every=5"]),  # mined draws from batch 10 on
])
def test_presets_run_and_report_their_metrics(preset, extra, cache_dir, tmp_path):
  overrides = short_overrides(tmp_path / "run", 20, f"+experiment={preset}", "task.width=8", "task.blocks=1",
                              "logging.save_artifacts=false", *extra)
  result = jaxtrain.run(jaxtrain.compose(overrides))
  metrics = result.summary["final_metrics"]
  assert result.summary["final_step"] == 20
  for name in ("val/policy_accuracy", "val/value_accuracy", "val/value_ece"):
    assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
  assert np.isfinite(metrics["val/value_mse"]) and np.isfinite(metrics["val/policy_ce"])


def test_quality_preset_draws_decisive_positions_more_often(cache_dir):
  cfg = jaxtrain.compose(["+experiment=policy_value_quality"]).data
  train = load_datasets(cfg)[0].train
  drawn = pipeline.train_pipeline([pipeline.TrainSet("tictactoe", train)], cfg).dataset
  quality = train.get_batch(np.arange(len(train)))["quality"]
  drawn_quality = np.concatenate([drawn[i]["quality"] for i in range(20)])
  # Drawn in proportion to quality, the mean drawn quality is E[q^2] / E[q], above E[q].
  expected = np.mean(quality**2) / np.mean(quality)
  assert drawn_quality.mean() == pytest.approx(expected, rel=0.05)
  assert drawn_quality.mean() > quality.mean() * 1.1


def test_input_pipeline_benchmark_smallest_mode(capsys):
  # The benchmark is a script, not a package: loaded by path, in-memory data, no workers, no runs.
  benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
  sys.path.insert(0, str(benchmarks))  # it imports machine_info from overhead.py
  try:
    spec = importlib.util.spec_from_file_location("benchmarks_input_pipeline", benchmarks / "input_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(benchmarks))
  result = module.main(["--datasets", "digits", "--workers", "0", "--batches", "3", "--warmup", "1",
                        "--repeats", "1", "--default-runs", "0"])
  assert [(row["dataset"], row["workers"]) for row in result["rows"]] == [("digits", 0)]
  assert result["rows"][0]["median"] > 0
  assert "| digits | 0 |" in capsys.readouterr().out


def test_unwritable_cache_is_a_one_line_config_error(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  monkeypatch.setenv(tictactoe.CACHE_ENV, str(blocker / "cache"))
  with pytest.raises(ConfigError, match=r"data=tictactoe: cannot write .*; set JAXTRAIN_CACHE_DIR") as err:
    tictactoe.cached_npz()
  assert "\n" not in str(err.value)
