"""`python -m jaxtrain.main [overrides...]`: the Hydra command line, nothing else.

Overrides are checked before Hydra starts (every job of a --multirun sweep
too), so a bad key or option fails with one line and exit code 2, before
anything is built or compiled.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from typing import Sequence

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from jaxtrain.config import compose as compose_lib
from jaxtrain.config.validate import validate
from jaxtrain.errors import ConfigError, TrainingDiverged
from jaxtrain.preemption import Preempted


def _report(err: Exception) -> None:
  kind = "stopped" if isinstance(err, Preempted) else "error"
  print(f"jaxtrain: {kind}: {err}", file=sys.stderr)


def check_overrides(argv: Sequence[str]) -> list[DictConfig]:
  """Composes and validates every job the command line describes; raises ConfigError.

  Returns the jobs' configs (none for Hydra's informational modes).
  """
  args = get_args_parser().parse_args(list(argv))
  if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
    return []  # Hydra's own informational modes
  jobs = compose_lib.expand_sweep(args.overrides) if args.multirun else [args.overrides]
  configs = []
  for job in jobs:
    configs.append(compose_lib.compose(job))
    validate(configs[-1])
  return configs


def _job(cfg: DictConfig) -> dict | None:
  from jaxtrain.api import run  # the heavy imports, only once a job really runs

  try:
    # The summary reaches Hydra callbacks (the multirun comparison) as the job's return value.
    return run(cfg, run_dir=HydraConfig.get().runtime.output_dir).summary
  except (ConfigError, Preempted, TrainingDiverged) as err:
    # Expected endings: one line and a documented exit code (README,
    # "When runs get interrupted"), not a traceback.
    _report(err)
    sys.exit(err.exit_code)


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point: validates, then hands the command line to Hydra."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    configs = check_overrides(argv)
  except ConfigError as err:
    _report(err)
    sys.exit(ConfigError.exit_code)
  compose_lib.register()
  scratch = None
  if configs and not any(c.logging.save_artifacts for c in configs):
    # logging.save_artifacts=false: Hydra's own outputs (.hydra, the job log,
    # multirun.yaml) go to a throwaway directory, removed on the way out.
    scratch = tempfile.mkdtemp(prefix="jaxtrain-hydra-")
    argv += ["hydra.output_subdir=null", f"hydra.run.dir={scratch}/run", f"hydra.sweep.dir={scratch}/sweep"]
  sys.argv = [sys.argv[0], *argv]
  try:
    hydra.main(config_path=compose_lib.config_dir(), config_name=compose_lib.CONFIG_NAME,
               version_base="1.3")(_job)()
  finally:
    if scratch is not None:
      shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
