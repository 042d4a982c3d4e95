"""`python -m jaxtrain.runs list|show|compare|best|export`: the experiment database from the shell.

A run is named by its id or by its run.name (the newest run of that name). The database is
`--db URL`, else the configured one (db.url, $JAXTRAIN_DB_URL, <run.root>/experiments.db).

    python -m jaxtrain.runs list --status finished --where optim.lr=0.001
    python -m jaxtrain.runs compare 3f2a9c0b1d7e lr-sweep-2
    python -m jaxtrain.runs best --metric val/loss --mode min
    python -m jaxtrain.runs export --csv runs.csv --table metrics
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any, Mapping, Sequence

import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from jaxtrain.errors import ConfigError
from jaxtrain.track.db import ExperimentDB, default_url

# Keys that differ between any two runs by construction, not by choice.
_BOOKKEEPING_KEYS = ("run.dir",)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}; lists stay values."""
  if not isinstance(tree, Mapping):
    return {prefix: tree} if prefix else {}
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
  """Dotted config keys whose values are not the same in all `configs` (absent counts as a value)."""
  flats = [flatten(c) for c in configs]
  keys = sorted(set().union(*flats)) if flats else []
  missing = object()
  return [k for k in keys if k not in _BOOKKEEPING_KEYS and len({json.dumps(f.get(k, missing), default=repr,
                                                                            sort_keys=True) for f in flats}) > 1]


def final_metrics(db: ExperimentDB, run: Mapping[str, Any]) -> dict[str, float]:
  """The summary's final metrics, else the last value of each metric the run logged."""
  summary = run.get("summary") or {}
  return dict(summary.get("final_metrics") or {}) or db.last_metrics(run["id"])


def _matches(run: Mapping[str, Any], where: Sequence[str]) -> bool:
  flat = flatten(run.get("config") or {})
  for condition in where:
    key, sep, text = condition.partition("=")
    if not sep:
      raise ConfigError(f"--where {condition!r}: expected key=value, e.g. optim.lr=0.001")
    value = flat.get(key)
    if value != yaml.safe_load(text) and str(value) != text:
      return False
  return True


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.6g}"
  if value is None:
    return ""
  return value if isinstance(value, str) else json.dumps(value, default=str)


def _print_table(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  table = Table(title=title)
  for column in columns:
    table.add_column(column, overflow="fold")
  for row in rows:
    table.add_row(*[_format(v) for v in row])
  console.print(table)


def cmd_list(db: ExperimentDB, args: argparse.Namespace, console: Console) -> None:
  runs = [r for r in db.list_runs(name=args.name, status=args.status) if _matches(r, args.where)]
  _print_table(console, f"{len(runs)} runs", ["id", "name", "status", "started", "final metrics"],
               [[r["id"], r["name"], r["status"], str(r["started_at"])[:19],
                 ", ".join(f"{k}={_format(v)}" for k, v in sorted(final_metrics(db, r).items()))] for r in runs])


def cmd_show(db: ExperimentDB, args: argparse.Namespace, console: Console) -> None:
  run = db.get_run(args.run)
  console.print(f"run {run['id']} ({run['name']}): {run['status']}; started {run['started_at']}, "
                f"ended {run['ended_at'] or '-'}; git {run['git_commit'] or '-'}; {run['run_dir']}")
  _print_table(console, "config", ["key", "value"], sorted(flatten(run["config"] or {}).items()))
  _print_table(console, "summary", ["key", "value"], sorted(flatten(run["summary"] or {}).items()))
  _print_table(console, "last metrics", ["metric", "value"], sorted(db.last_metrics(run["id"]).items()))


def cmd_compare(db: ExperimentDB, args: argparse.Namespace, console: Console) -> None:
  runs = [db.get_run(ref) for ref in args.runs]
  keys = differing_keys([r["config"] or {} for r in runs])
  metrics = [final_metrics(db, r) for r in runs]
  names = args.metrics or sorted(set().union(*metrics))
  flats = [flatten(r["config"] or {}) for r in runs]
  rows = [[key, *[f.get(key) for f in flats]] for key in keys]
  rows += [[name, *[m.get(name) for m in metrics]] for name in names]
  _print_table(console, f"{len(keys)} differing config keys, then metrics", ["key", *[r["id"] for r in runs]], rows)


def cmd_best(db: ExperimentDB, args: argparse.Namespace, console: Console) -> None:
  scored = []
  for run in db.list_runs(name=args.name, status=args.status):
    value = final_metrics(db, run).get(args.metric)
    if value is not None and value == value:  # NaN never wins
      scored.append((value, run))
  if not scored:
    raise LookupError(f"no {args.status or ''} run has a value of {args.metric!r}".replace("  ", " "))
  value, run = (min if args.mode == "min" else max)(scored, key=lambda pair: pair[0])
  console.print(f"best by {args.metric} ({args.mode}): {run['id']} ({run['name']}) {args.metric}={value:.6g} "
                f"{run['run_dir']}")


def cmd_export(db: ExperimentDB, args: argparse.Namespace, console: Console) -> None:
  if args.table == "metrics":
    names = {r["id"]: r["name"] for r in db.list_runs()}
    rows = [{"run_id": m["run_id"], "run_name": names.get(m["run_id"]), "step": m["step"], "split": m["split"],
             "name": m["name"], "value": m["value"]} for m in db.all_metrics()]
  else:
    rows = []
    for run in db.list_runs():
      row = {k: run[k] for k in ("id", "name", "status", "started_at", "ended_at", "git_commit", "host", "run_dir")}
      row.update(final_metrics(db, run))
      row["config"] = json.dumps(run["config"], sort_keys=True)
      rows.append(row)
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with open(args.csv, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  console.print(f"wrote {len(rows)} {args.table} rows to {args.csv}")


def _configured_url() -> str:
  """db.url of the default config (an env profile may move run.root), else the built-in default."""
  from jaxtrain.config import compose as compose_lib

  cfg = compose_lib.compose([])
  return cfg.db.url or default_url(cfg.run.root)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m jaxtrain.runs", description=__doc__.splitlines()[0])
  parser.add_argument("--db", help="SQLAlchemy URL of the experiment database (default: the configured one)")
  commands = parser.add_subparsers(dest="command", required=True)
  listing = commands.add_parser("list", help="runs, newest first")
  listing.add_argument("--name")
  listing.add_argument("--status", choices=["running", "finished", "failed", "preempted"])
  listing.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="config value to match, e.g. optim.lr=0.001 (repeatable)")
  commands.add_parser("show", help="config, summary and last metrics of a run").add_argument("run")
  compare = commands.add_parser("compare", help="the config keys that differ, and the metrics")
  compare.add_argument("runs", nargs="+")
  compare.add_argument("--metrics", nargs="*", help="metrics to show (default: the final ones)")
  best = commands.add_parser("best", help="the run with the best value of a metric")
  best.add_argument("--metric", default="val/loss")
  best.add_argument("--mode", choices=["min", "max"], default="min")
  best.add_argument("--name")
  best.add_argument("--status", default="finished", choices=["running", "finished", "failed", "preempted"])
  export = commands.add_parser("export", help="runs or metric rows as CSV")
  export.add_argument("--csv", required=True, metavar="PATH")
  export.add_argument("--table", choices=["runs", "metrics"], default="runs")
  return parser


COMMANDS = {"list": cmd_list, "show": cmd_show, "compare": cmd_compare, "best": cmd_best, "export": cmd_export}


def main(argv: Sequence[str] | None = None) -> int:
  """Runs one command; user errors print one line and return 2."""
  args = build_parser().parse_args(argv)
  console = Console(width=160)
  try:
    db = ExperimentDB(args.db or _configured_url(), create=False)
  except (ConfigError, SQLAlchemyError) as err:
    print(f"jaxtrain.runs: error: {err}", file=sys.stderr)
    return 2
  try:
    COMMANDS[args.command](db, args, console)
  except (LookupError, ConfigError, OSError, SQLAlchemyError) as err:
    print(f"jaxtrain.runs: error: {err.args[0] if err.args else err}", file=sys.stderr)
    return 2
  finally:
    db.close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
