"""NPZ, HDF5 and ArrayRecord sources give back the rows they were written from, read per batch,
and a dataset-config directory loads its datasets in file-name order, at most data.max_datasets."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxtrain.config.schema import DataConfig
from jaxtrain.data import formats, pipeline
from jaxtrain.data.sources import ConcatSource, load_datasets

ROWS = 40


def _arrays(seed: int = 0, rows: int = ROWS) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"images": rng.normal(size=(rows, 4, 3)).astype(np.float32),
          "digit": rng.integers(0, 10, rows).astype(np.int32),
          "w": rng.uniform(size=rows).astype(np.float64)}


def _write(path, arrays, fmt):
  if fmt == "npz":
    np.savez(path, **arrays)
  elif fmt == "npz_compressed":
    np.savez_compressed(path, **arrays)
  elif fmt == "hdf5":
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
      for key, value in arrays.items():
        f[key] = value
  else:
    formats.write_array_record(path, ({k: v[i] for k, v in arrays.items()} for i in range(len(arrays["w"]))))
  return path


SUFFIX = {"npz": ".npz", "npz_compressed": ".npz", "hdf5": ".h5", "array_record": ".array_record"}
KEYS = {"x": "images", "label": "digit", "weight": "w"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  root = tmp_path_factory.mktemp("sources")
  arrays = _arrays()
  return arrays, {fmt: _write(root / f"data_{fmt}{suffix}", arrays, fmt) for fmt, suffix in SUFFIX.items()}


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_source_returns_the_written_rows(written, fmt):
  arrays, paths = written
  source = formats.open_source(paths[fmt], keys=KEYS)  # format from the suffix
  assert isinstance(source, formats.Source) and len(source) == ROWS
  assert source.features == {"x": formats.Feature((4, 3), np.dtype(np.float32)),
                             "label": formats.Feature((), np.dtype(np.int32)),
                             "weight": formats.Feature((), np.dtype(np.float64))}
  indices = np.array([17, 3, 3, 39, 0, 25])  # unsorted, with a repeat
  for restored in (source, pickle.loads(pickle.dumps(source))):  # Grain workers get a pickled copy
    batch = restored.get_batch(indices)
    for key, stored in KEYS.items():
      np.testing.assert_array_equal(batch[key], arrays[stored][indices])
      np.testing.assert_array_equal(restored[21][key], arrays[stored][21])


def test_uncompressed_npz_is_memory_mapped_and_compressed_is_not(written):
  _, paths = written
  mapped = formats.open_source(paths["npz"])
  assert mapped.memory_mapped
  for array in mapped._open().values():
    assert isinstance(array, np.memmap) and Path(array.filename).resolve() == paths["npz"].resolve()
  with zipfile.ZipFile(paths["npz_compressed"]) as archive:
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
  assert not formats.open_source(paths["npz_compressed"]).memory_mapped


class _CountingReader:
  """Wraps a lazy array-like (h5py dataset, ArrayRecord source) and counts the rows read."""

  def __init__(self, inner, counter):
    self.inner, self.counter = inner, counter

  def __getitem__(self, index):
    self.counter.append(len(np.atleast_1d(index)))
    return self.inner[index]

  def __getitems__(self, indices):
    self.counter.append(len(indices))
    return self.inner.__getitems__(indices)

  def __getattr__(self, name):
    return getattr(self.inner, name)


@pytest.mark.parametrize("fmt", ["hdf5", "array_record"])
def test_the_pipeline_reads_only_the_rows_of_each_batch(written, fmt):
  _, paths = written
  source = formats.open_source(paths[fmt], keys=KEYS)
  reads: list[int] = []
  if fmt == "hdf5":
    source._datasets = {k: _CountingReader(d, reads) for k, d in source._open().items()}
  else:
    source._records = _CountingReader(source._records, reads)
  ds = pipeline.train_dataset(source, DataConfig(batch_size=8, shuffle_seed=1))
  reads.clear()  # building the pipeline may peek at an example
  for i in range(3):
    assert len(ds[i]["x"]) == 8
  # HDF5: one read per key per batch; ArrayRecord: one multi-record read per batch.
  per_batch = len(KEYS) if fmt == "hdf5" else 1
  assert len(reads) == 3 * per_batch and max(reads) <= 8


def _dataset_dir(root, names=("c", "a", "b")):
  for i, name in enumerate(names):
    _write(root / f"{name}.npz", _arrays(seed=i, rows=20 + i), "npz")
    (root / f"{name}.yaml").write_text(f"path: {name}.npz\nkeys: {{x: images, label: digit}}\n"
                                       f"val_fraction: 0.25\noptions: {{weight: {i + 1}}}\n")
  return root


def test_dataset_dir_loads_the_first_max_datasets_by_file_name(tmp_path):
  root = _dataset_dir(tmp_path)
  datasets = load_datasets(DataConfig(name="dataset_dir", dataset_configs_path=str(root), max_datasets=2))
  assert [d.name for d in datasets] == ["a", "b"]
  assert [d.options for d in datasets] == [{"weight": 2}, {"weight": 3}]
  a = _arrays(seed=1, rows=21)
  for d, rows in zip(datasets, (21, 22)):
    assert len(d.train) + len(d.val) == rows and len(d.val) == round(rows * 0.25)
    assert set(d.train.features) == {"x", "label"}
  # Train and val are disjoint row sets of the file, together all of it.
  first = datasets[0]
  rows = np.concatenate([first.train.get_batch(np.arange(len(first.train)))["label"],
                         first.val.get_batch(np.arange(len(first.val)))["label"]])
  np.testing.assert_array_equal(np.sort(rows), np.sort(a["digit"]))
  assert len(load_datasets(DataConfig(name="dataset_dir", dataset_configs_path=str(root)))) == 3


def test_explicit_val_file_and_sources_end_to_end(tmp_path):
  _write(tmp_path / "train.npz", _arrays(seed=4), "npz")
  _write(tmp_path / "held_out.array_record", _arrays(seed=5, rows=6), "array_record")
  (tmp_path / "one.yaml").write_text("path: train.npz\nval_path: held_out.array_record\nformat: auto\n"
                                     "keys: {x: images, label: digit}\n")
  # The val file's format comes from its own suffix.
  (one,) = load_datasets(DataConfig(name="dataset_dir", dataset_configs_path=str(tmp_path)))
  assert (len(one.train), len(one.val)) == (ROWS, 6)
  np.testing.assert_array_equal(one.val.get_batch(np.arange(6))["x"], _arrays(seed=5, rows=6)["images"])
  both = ConcatSource([one.train, one.val])
  batch = both.get_batch(np.array([ROWS + 2, 1, ROWS]))
  np.testing.assert_array_equal(batch["label"], [_arrays(seed=5, rows=6)["digit"][2], _arrays(seed=4)["digit"][1],
                                                 _arrays(seed=5, rows=6)["digit"][0]])

