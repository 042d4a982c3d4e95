"""`python -m jaxtrain.data.check PATH`: validate a data file or a dataset-config directory.

Runs the same checks a training run does before compiling anything and prints
one line per dataset (or file); a problem is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from jaxtrain.config.schema import DataConfig
from jaxtrain.data import formats, validation
from jaxtrain.errors import ConfigError


def describe(source: formats.Source) -> str:
  """'1437 examples; x float32 [64], label int32 []'."""
  keys = ", ".join(f"{k} {f.dtype} {list(f.shape)}" for k, f in source.features.items())
  return f"{len(source)} examples; {keys}"


def check(path: str | Path, max_datasets: int | None = None, check_finite: bool = True) -> list[str]:
  """One summary line per dataset of a dataset-config directory, or one for a single data file."""
  path = Path(path)
  if path.is_dir():
    from jaxtrain.data.dataset_dir import load_datasets

    cfg = DataConfig(name="dataset_dir", dataset_configs_path=str(path), max_datasets=max_datasets,
                     check_finite=check_finite)
    return [f"{d.name}: train {describe(d.train)}; val {len(d.val)} examples; {d.train.description}"
            + (f"; options {d.options}" if d.options else "") for d in load_datasets(cfg)]
  source = formats.open_source(path)
  validation.validate_split(source, "whole file", check_finite=check_finite)
  return [f"{path}: {describe(source)}"]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxtrain.data.check", description=__doc__.splitlines()[0])
  parser.add_argument("path", help="a .npz/.h5/.array_record file or a directory of dataset YAML files")
  parser.add_argument("--max-datasets", type=int, default=None, help="check only the first N dataset YAMLs")
  parser.add_argument("--skip-finite", action="store_true", help="do not scan float arrays for NaN/Inf")
  args = parser.parse_args(argv)
  try:
    lines = check(args.path, args.max_datasets, check_finite=not args.skip_finite)
  except ConfigError as err:
    print(f"error: {err}", file=sys.stderr)
    return ConfigError.exit_code
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
