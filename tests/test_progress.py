"""Plain progress lines when stdout is not a terminal: rate-limited, no bar redraws."""

import datetime
import re

import pytest

from _helpers import run_cli, short_overrides

LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*step (\d+)/(\d+) \(")


def _progress_lines(text):
  lines = []
  for line in text.splitlines():
    match = LINE.search(line)
    if match:
      when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
      lines.append((when, int(match.group(2)), int(match.group(3))))
  return lines


@pytest.mark.slow
def test_plain_progress_lines(tmp_path):
  steps, every = 100, 0.4
  overrides = short_overrides(tmp_path / "run", steps, "trainer.eval_every=50", "checkpoint.every=100")
  overrides = [o for o in overrides if not o.startswith("logging.progress")]
  proc = run_cli(overrides + ["logging.progress=plain", f"logging.print_every_secs={every}"], cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  output = proc.stdout + proc.stderr
  lines = _progress_lines(output)
  assert len(lines) >= 2, output[-3000:]
  assert all(total == steps for _, _, total in lines)
  assert [s for _, s, _ in lines] == sorted(s for _, s, _ in lines)
  assert lines[-1][1] == steps  # the end is always reported
  assert len(lines) < steps / 4  # one line per interval, not per step
  # Rate limit: consecutive lines at least print_every_secs apart (the final line may come sooner).
  gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(lines[:-1], lines[1:-1])]
  assert all(gap >= every - 0.01 for gap in gaps), gaps
  # No rich bar: no carriage-return redraws, no cursor/colour escape sequences.
  assert "\r" not in output
  assert "\x1b[" not in output
  assert "━" not in output


def test_auto_is_plain_lines_without_a_terminal(monkeypatch):
  import sys

  from jaxtrain.actions.logging import LiveStats
  from jaxtrain.actions.progress import ProgressLines, make_progress

  monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
  progress = make_progress("auto", 100, 0, LiveStats(), print_every_secs=3.0)
  assert isinstance(progress, ProgressLines) and progress.every_secs == 3.0
  assert make_progress("none", 100, 0, LiveStats(), 3.0) is None
  with pytest.raises(ValueError, match="choose one of"):
    make_progress("fancy", 100, 0, LiveStats(), 3.0)


def test_plain_line_format(caplog):
  from jaxtrain.actions.base import Bookkeeping, LoopContext
  from jaxtrain.actions.logging import LiveStats
  from jaxtrain.actions.progress import ProgressLines

  live = LiveStats(step=20, loss=0.125, steps_per_sec=42.0)
  action = ProgressLines(200, live, every_secs=1000.0)
  ctx = LoopContext(step=20, total_steps=200, steps_per_epoch=10, state=None, train_metrics=None,
                    data_iterator=None, book=Bookkeeping())
  with caplog.at_level("INFO", logger="jaxtrain"):
    action(ctx)  # not due yet: the interval has not passed
    assert not caplog.records
    ctx.final = True
    action(ctx)  # the end is always reported
  assert [r.getMessage() for r in caplog.records] == ["step 20/200 (10%) epoch 2.00  loss 0.125  42.0 steps/s"]


def test_python_face_shows_its_log_lines_once(tmp_path):
  """Importing Orbax makes absl call logging.basicConfig(), leaving the root logger a handler at
  WARNING; runs from Python (scripts, notebooks) still show jaxtrain's INFO lines, each once."""
  import subprocess
  import sys

  script = ("import logging\n"
            "import jaxtrain.api\n"
            "logging.basicConfig()  # what absl does on Orbax's first log call, if nothing else did\n"
            "jaxtrain.api._setup_logging()\n"
            "logging.getLogger('jaxtrain.loop').info('step 7/9')\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count("step 7/9") == 1, proc.stderr[-3000:]


def test_a_chosen_jaxtrain_log_level_is_kept():
  import logging

  from jaxtrain.api import _setup_logging

  logger = logging.getLogger("jaxtrain")
  level, handlers = logger.level, list(logger.handlers)
  try:
    logger.setLevel(logging.WARNING)
    _setup_logging()
    assert logger.level == logging.WARNING and logger.handlers == handlers
  finally:
    logger.setLevel(level)
