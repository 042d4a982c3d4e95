"""Bad data files and data that do not fit the task fail before anything compiles, with one line
naming the file, the key and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrain.config.schema import DataConfig
from jaxtrain.data import check, validation
from jaxtrain.data.sources import load_datasets
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.autoencoder import AutoencoderConfig, AutoencoderTask
from jaxtrain.tasks.classifier import ClassifierConfig, ClassifierTask


def _good(rows: int = 6) -> dict[str, np.ndarray]:
  return {"images": np.zeros((rows, 2, 2), np.float32), "responses": np.zeros(rows, np.int32)}


def _with(**changes) -> dict[str, np.ndarray]:
  arrays = _good()
  arrays.update(changes)
  return arrays


def _nan_in_row_3() -> dict[str, np.ndarray]:
  arrays = _good()
  arrays["images"][3, 1, 0] = np.nan
  return arrays


# name -> (arrays written to s03.npz or None for no file, YAML text, the message's distinctive part)
CASES = {
    "missing file": (None, "path: s03.npz", "s03.npz: not found"),
    "missing key": (_good(), "path: s03.npz\nkeys: {x: images, y: labels}",
                    "s03.npz: no key 'labels' (for 'y'); the file has: images, responses"),
    "wrong dtype": (_with(responses=np.array(list("abcdef"))), "path: s03.npz",
                    "s03.npz: key 'responses' has dtype <U1; expected numbers"),
    "rank 0": (_with(responses=np.array(3)), "path: s03.npz",
               "s03.npz: key 'responses' is a single value (rank 0); expected an array with one row per example"),
    "lengths differ": (_with(responses=np.zeros(2, np.int32)), "path: s03.npz",
                       "s03.npz: key 'responses' has 2 rows but 'images' has 6 (arrays of one dataset must have "
                       "equal length)"),
    "nan": (_nan_in_row_3(), "path: s03.npz\nval_fraction: 0.5\nsplit_seed: 0",
            "s03.npz: key 'images' has NaN or Inf in row 3 ("),
    "empty split": (_good(), "path: s03.npz\nval_fraction: 0.01", "s03.npz: the val split is empty"),
    "unknown yaml key": (_good(), "path: s03.npz\nvalidation_fraction: 0.1",
                         "s03.yaml: Key 'validation_fraction' not in 'DatasetFileConfig'"),
    "unknown format": (_good(), "path: s03.npz\nformat: parquet", "format='parquet' for"),
    "no path": (_good(), "keys: {x: images}", "s03.yaml: missing 'path' (the data file, relative to the YAML)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_line_naming_file_and_key(tmp_path, case):
  arrays, yaml_text, expected = CASES[case]
  (tmp_path / "sessions").mkdir()
  if arrays is not None:
    np.savez(tmp_path / "sessions" / "s03.npz", **arrays)
  (tmp_path / "sessions" / "s03.yaml").write_text(yaml_text + "\n")
  with pytest.raises(ConfigError) as err:
    load_datasets(DataConfig(name="dataset_dir", dataset_configs_path=str(tmp_path / "sessions")))
  message = str(err.value)
  assert expected in message and "\n" not in message
  # The same check from the command line: one line on stderr, exit code 2.
  assert check.main([str(tmp_path / "sessions")]) == 2


def test_the_finiteness_scan_reads_bounded_chunks_and_names_the_row(tmp_path, monkeypatch):
  arrays = _good(rows=50)
  arrays["images"][37, 0, 1] = np.inf
  np.savez(tmp_path / "big.npz", **arrays)
  source = check.formats.open_source(tmp_path / "big.npz")
  calls = []
  get_batch = source.get_batch
  monkeypatch.setattr(source, "get_batch", lambda rows: calls.append(len(rows)) or get_batch(rows))
  monkeypatch.setattr(validation, "CHUNK_BYTES", 10 * 4 * 4)  # 10 rows of 2x2 float32 per chunk
  with pytest.raises(ConfigError, match=r"big.npz: key 'images' has NaN or Inf in row 37 \(train split"):
    validation.check_all_finite(source)
  assert calls == [10, 10, 10, 10]  # stopped at the chunk holding row 37, never more than 10 rows at once


def _source(tmp_path, **arrays):
  np.savez(tmp_path / "d.npz", **arrays)
  return check.formats.open_source(tmp_path / "d.npz")


@pytest.mark.parametrize("task_cls,config,arrays,expected", [
    (ClassifierTask, ClassifierConfig(), {"x": np.zeros((4, 3), np.float32)},
     "d.npz: task=t needs key 'label' (int or unsigned int, rank 0 per example), the data have: x"),
    (ClassifierTask, ClassifierConfig(), {"x": np.zeros((4, 3), np.float32), "label": np.zeros(4, np.float32)},
     "d.npz: key 'label' is float32 [] per example, but task=t expects int or unsigned int, rank 0 per example"),
    (ClassifierTask, ClassifierConfig(), {"x": np.zeros((4, 3), np.float32), "label": np.zeros((4, 2), np.int64)},
     "d.npz: key 'label' is int64 [2] per example, but task=t expects int or unsigned int, rank 0 per example"),
    (AutoencoderTask, AutoencoderConfig(), {"x": np.zeros((4, 3), np.int32)},
     "d.npz: key 'x' is int32 [3] per example, but task=t expects float, any shape"),
    (AutoencoderTask, AutoencoderConfig(reconstruction="chamfer"), {"x": np.zeros((4, 3), np.float32)},
     "d.npz: key 'x' is float32 [3] per example, but task=t expects float, rank 2 per example"),
])
def test_data_that_do_not_fit_the_task(tmp_path, task_cls, config, arrays, expected):
  source = _source(tmp_path, **arrays)
  with pytest.raises(ConfigError) as err:
    validation.check_compatibility(task_cls.expected_inputs(config), [source], "task=t")
  assert expected in str(err.value)


def test_data_that_fit_pass(tmp_path):
  source = _source(tmp_path, x=np.zeros((4, 8, 3), np.float32), label=np.zeros(4, np.uint8))
  validation.check_compatibility(ClassifierTask.expected_inputs(ClassifierConfig()), [source], "task=t")
  validation.check_compatibility(AutoencoderTask.expected_inputs(AutoencoderConfig(reconstruction="chamfer")),
                                 [source], "task=t")
  validation.check_compatibility({"x": ((None, 3), "f")}, [source], "task=t")
  with pytest.raises(ConfigError, match=r"expects float, shape \['\*', 4\] per example"):
    validation.check_compatibility({"x": ((None, 4), "f")}, [source], "task=t")
