"""`python -m jaxtrain.main [overrides...]`: the Hydra command line, nothing else.

Overrides are checked before any output is written (every job of a --multirun
sweep too), so a bad key or option fails with one line and exit code 2, before
anything is built or compiled. A plain run (one job, no Hydra flags) composes its
config once and runs it through Hydra's own job runner; everything else goes
through `hydra.main`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from typing import Sequence

import hydra
from hydra import version
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from jaxtrain.config import compose as compose_lib
from jaxtrain.config.validate import validate
from jaxtrain.errors import ConfigError, TrainingDiverged
from jaxtrain.preemption import Preempted
from jaxtrain.tasks.registry import load_plugins


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
  """Entry point: validates, then runs the job (or hands the command line to Hydra)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  sys.argv = [sys.argv[0], *argv]
  try:
    if _is_plain_run(argv):
      _run_once(argv)
    else:
      _run_with_hydra_main(argv)
  except ConfigError as err:
    _report(err)
    sys.exit(ConfigError.exit_code)


def _run_with_hydra_main(argv: list[str]) -> None:
  """--multirun, Hydra's own flags: every job checked first, then `hydra.main`."""
  configs = check_overrides(argv)
  compose_lib.register()
  scratch = None
  if configs and not any(c.logging.save_artifacts for c in configs):
    # logging.save_artifacts=false: Hydra's own outputs (.hydra, the job log,
    # multirun.yaml) go to a throwaway directory, removed on the way out.
    scratch = tempfile.mkdtemp(prefix="jaxtrain-hydra-")
    argv = [*argv, "hydra.output_subdir=null", f"hydra.run.dir={scratch}/run", f"hydra.sweep.dir={scratch}/sweep"]
    sys.argv = [sys.argv[0], *argv]
  try:
    hydra.main(config_path=compose_lib.config_dir(), config_name=compose_lib.CONFIG_NAME,
               version_base=compose_lib.HYDRA_VERSION_BASE)(_job)()
  finally:
    if scratch is not None:
      shutil.rmtree(scratch, ignore_errors=True)


def _is_plain_run(argv: Sequence[str]) -> bool:
  """One job with the shipped config: no --multirun, no Hydra flags, hydra.mode left alone."""
  args = get_args_parser().parse_args(list(argv))
  flags = (args.help, args.hydra_help, args.cfg, args.info, args.shell_completion, args.multirun,
           args.config_path, args.config_name, args.config_dir, args.experimental_rerun)
  return not any(flags) and not any(o.lstrip("~+").startswith("hydra.mode") for o in args.overrides)


def _run_once(argv: Sequence[str]) -> None:
  """What `hydra.main` does for one job, with the config composed once instead of three times.

  Through `hydra.main`, the config is composed by the override check, then by Hydra to
  read `hydra.mode`, then for the job (~0.12 s each on a warm start of the default task).
  A plain run's mode is RUN (Hydra's command line adds this same override when the config
  leaves it unset), and the check can use the job's own composition. The rest is Hydra's
  Hydra.run with the check between composing and running: the output directory, the
  .hydra records, logging, callbacks and error reports are Hydra's own.
  """
  from hydra._internal.callbacks import Callbacks
  from hydra._internal.hydra import Hydra
  from hydra._internal.utils import (create_automatic_config_search_path,
                                     detect_calling_file_or_module_from_task_function, detect_task_name,
                                     run_and_report)
  from hydra.core.global_hydra import GlobalHydra
  from hydra.core.utils import run_job
  from hydra.types import HydraContext, RunMode

  version.setbase(compose_lib.HYDRA_VERSION_BASE)
  load_plugins()
  compose_lib.register()
  calling_file, calling_module = detect_calling_file_or_module_from_task_function(_job)
  search_path = create_automatic_config_search_path(calling_file, calling_module, compose_lib.config_dir())
  app = run_and_report(lambda: Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                                         config_search_path=search_path))
  overrides = [*get_args_parser().parse_args(list(argv)).overrides, "hydra.mode=RUN"]
  scratch = None
  try:
    cfg = compose_lib.checked(lambda: app.compose_config(config_name=compose_lib.CONFIG_NAME, overrides=overrides,
                                                         with_log_configuration=True, run_mode=RunMode.RUN),
                              overrides)
    validate(cfg)  # fails before Hydra creates the output directory
    if not cfg.logging.save_artifacts:
      # Hydra's own outputs (.hydra, the job log) go to a throwaway directory, removed on the way out.
      scratch = tempfile.mkdtemp(prefix="jaxtrain-hydra-")
      with open_dict(cfg):
        cfg.hydra.output_subdir = None
        cfg.hydra.run.dir = f"{scratch}/run"

    def run() -> None:
      callbacks = Callbacks(cfg)
      callbacks.on_run_start(config=cfg, config_name=compose_lib.CONFIG_NAME)
      ret = run_job(hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
                    task_function=_job, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None)
      callbacks.on_run_end(config=cfg, config_name=compose_lib.CONFIG_NAME, job_return=ret)
      _ = ret.return_value  # raises the job's exception, reported by run_and_report

    run_and_report(run)
  finally:
    GlobalHydra.instance().clear()
    if scratch is not None:
      shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
