"""data=dataset_dir: a directory with one YAML file per dataset.

Each `*.yaml` names its data file(s) relative to itself, e.g.

    path: sessions/s03.npz          # npz | .h5/.hdf5 | .array_record
    format: auto                    # auto (by suffix) | npz | hdf5 | array_record
    keys: {x: images, label: digit} # batch key -> array in the file (default: every array as is)
    val_path: sessions/s03_val.npz  # an explicit val file; else val_fraction of `path` (default data.val_fraction)
    options: {weight: 2.0}          # NamedDataset.options, e.g. the mixture weight

The files are read in file-name order and the first `data.max_datasets` are used.
Every source is validated (jaxtrain/data/validation.py) before anything is compiled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from jaxtrain.config.schema import DataConfig
from jaxtrain.data import formats, validation
from jaxtrain.data.sources import NamedDataset, SubsetSource
from jaxtrain.errors import ConfigError


@dataclasses.dataclass
class DatasetFileConfig:
  """One dataset's YAML (see the module docstring)."""

  path: str = MISSING
  name: Optional[str] = None  # default: the YAML's file name without suffix
  format: str = "auto"
  keys: Optional[dict[str, str]] = None
  val_path: Optional[str] = None
  val_fraction: Optional[float] = None
  split_seed: Optional[int] = None  # default: data.split_seed
  options: dict[str, Any] = dataclasses.field(default_factory=dict)


def dataset_yamls(root: str | Path, max_datasets: int | None = None) -> list[Path]:
  """The directory's dataset YAML files in file-name order, at most `max_datasets`."""
  root = Path(root).expanduser()
  if not root.is_dir():
    raise ConfigError(f"data.dataset_configs_path={str(root)!r}: not a directory")
  files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
  if not files:
    raise ConfigError(f"data.dataset_configs_path={str(root)!r}: holds no *.yaml dataset configs")
  if max_datasets is not None:
    if max_datasets < 1:
      raise ConfigError(f"data.max_datasets={max_datasets}: must be at least 1 (or null for all)")
    files = files[:max_datasets]
  return files


def read_dataset_config(yaml_path: Path) -> DatasetFileConfig:
  """The typed config of one dataset YAML; unknown keys or wrong types are a one-line error."""
  try:
    merged = OmegaConf.merge(OmegaConf.structured(DatasetFileConfig), OmegaConf.load(yaml_path))
    config = OmegaConf.to_object(merged)
  except MissingMandatoryValue:
    raise ConfigError(f"dataset config {yaml_path}: missing 'path' (the data file, relative to the YAML)") from None
  except OmegaConfBaseException as err:
    detail = str(err).splitlines()[0]
    raise ConfigError(f"dataset config {yaml_path}: {detail} (keys: "
                      f"{', '.join(f.name for f in dataclasses.fields(DatasetFileConfig))})") from None
  except Exception as err:  # a YAML syntax error
    raise ConfigError(f"dataset config {yaml_path}: not valid YAML ({str(err).splitlines()[0]})") from None
  return config


def split_source(source: formats.Source, val_fraction: float, seed: int, where: str,
                 ) -> tuple[formats.Source, formats.Source]:
  """A seeded random train/val split of one source, as index views (nothing is read)."""
  if not 0.0 < val_fraction < 1.0:
    raise ConfigError(f"{where}: val_fraction={val_fraction}: must be strictly between 0 and 1")
  n = len(source)
  order = np.random.default_rng(seed).permutation(n)
  n_val = int(round(n * val_fraction))
  val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
  return SubsetSource(source, train_idx), SubsetSource(source, val_idx)


def load_dataset(yaml_path: Path, cfg: DataConfig) -> NamedDataset:
  """One validated dataset from its YAML."""
  entry = read_dataset_config(yaml_path)
  base = yaml_path.parent

  def relative(path: str) -> Path:
    return (base / path).expanduser()

  train = formats.open_source(relative(entry.path), entry.format, entry.keys)
  if entry.val_path is not None:
    val = formats.open_source(relative(entry.val_path), entry.format, entry.keys)
  else:
    fraction = cfg.val_fraction if entry.val_fraction is None else entry.val_fraction
    seed = cfg.split_seed if entry.split_seed is None else entry.split_seed
    train, val = split_source(train, fraction, seed, f"dataset config {yaml_path}")
  name = entry.name or yaml_path.stem
  validation.validate_split(train, "train", check_finite=cfg.check_finite)
  validation.validate_split(val, "val", check_finite=cfg.check_finite)
  validation.same_features(train, val)
  return NamedDataset(name, train, val, dict(entry.options))


def load_datasets(cfg: DataConfig) -> list[NamedDataset]:
  """Every dataset of `data.dataset_configs_path` (see the module docstring)."""
  if not cfg.dataset_configs_path:
    raise ConfigError("data=dataset_dir needs data.dataset_configs_path=<directory of dataset YAML files>")
  datasets = [load_dataset(p, cfg) for p in dataset_yamls(cfg.dataset_configs_path, cfg.max_datasets)]
  names = [d.name for d in datasets]
  duplicate = next((n for n in names if names.count(n) > 1), None)
  if duplicate is not None:
    raise ConfigError(f"data.dataset_configs_path={cfg.dataset_configs_path!r}: two datasets are named "
                      f"{duplicate!r} (names must be unique)")
  return datasets
