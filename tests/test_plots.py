"""Figures: presets, file naming, valid PNGs, example layouts, families a task cannot offer."""

import logging
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import jaxtrain
from jaxtrain.actions.plots import FAMILIES, enabled_families, evals_up_to
from jaxtrain.track import figures

from _helpers import REPO, short_overrides

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIGS = REPO / "configs" / "logging"


def _png_size(path: Path, min_bytes: int = 2_000) -> tuple[int, int]:
  """(width, height) of a PNG, after checking that it is one and is not a blank canvas."""
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
  assert len(data) > min_bytes, (path, len(data))
  from matplotlib.image import imread

  assert imread(path).std() > 0.01, f"{path} is blank"
  return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def plotted_run(tmp_path_factory):
  """The default task with logging=plots_full: 40 steps, evaluations at 20 and 40, a figure every eval."""
  run_dir = tmp_path_factory.mktemp("plots") / "run"
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  logger = logging.getLogger("jaxtrain")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    result = jaxtrain.run(jaxtrain.compose(short_overrides(run_dir, 40, "logging=plots_full",
                                                           "logging.plot_every=1")))
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return SimpleNamespace(result=result, figures=run_dir / "figures", messages=messages)


def test_plots_full_writes_each_family_at_eval_and_end(plotted_run):
  # The ae task has no sample(): that family is skipped with one info line.
  offered = ["latent", "losses", "lr", "metrics", "recon"]
  expected = {f"{family}-{moment}-{step}.png" for family in offered for moment, step in (("eval", 20), ("end", 40))}
  assert {p.name for p in plotted_run.figures.iterdir()} == expected
  for path in plotted_run.figures.iterdir():
    width, height = _png_size(path, min_bytes=10_000)
    assert 300 <= width <= 3000 and 250 <= height <= 2000, (path.name, width, height)
  skipped = [m for m in plotted_run.messages if "skipping family" in m]
  assert skipped == ["figures: skipping family samples: task ae offers no sample()"]


def test_default_logging_draws_nothing(reference_run):
  assert not (Path(reference_run.run_dir) / "figures").exists()


def test_presets_switch_families():
  def on(preset):
    node = yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text()).get("families", {})
    return [f for f in FAMILIES if node.get(f, {}).get("enabled")]

  assert on("default") == []
  assert on("plots_minimal") == ["losses"]
  assert on("plots_standard") == ["losses", "metrics", "lr", "recon"]
  assert on("plots_full") == list(FAMILIES)
  # A preset composes onto the default logging options; single families switch on from the command line.
  cfg = jaxtrain.compose(["logging=plots_minimal", "logging.families.latent.enabled=true"])
  assert [f for f in FAMILIES if cfg.logging.families[f].enabled] == ["losses", "latent"]
  assert cfg.logging.name == "plots_minimal" and cfg.logging.progress == "auto" and cfg.logging.save_artifacts


def test_families_a_task_lacks_are_skipped(caplog):
  class EmbedOnly:
    def supports(self, view):
      return view == "embed"

  logging_cfg = SimpleNamespace(families=SimpleNamespace(**{f: SimpleNamespace(enabled=True) for f in FAMILIES}))
  with caplog.at_level(logging.INFO, logger="jaxtrain"):
    assert enabled_families(logging_cfg, EmbedOnly()) == ["losses", "metrics", "lr", "latent"]
  assert len([r for r in caplog.records if "skipping family" in r.getMessage()]) == 2


def test_eval_count_is_a_function_of_the_step():
  assert evals_up_to(40, (20,)) == 2
  assert evals_up_to(1000, (250, 500)) == 4  # checkpoint steps are eval steps already
  assert evals_up_to(15, (3, 5)) == 7


@pytest.mark.parametrize("shape, mask, kind", [
    ((64,), False, "image"), ((8, 8, 1), False, "image"), ((8, 8, 3), False, "image"), ((28, 28), False, "image"),
    ((64, 3), True, "points"), ((10,), False, "line"), ((5, 2), False, "line"), ((64, 3), False, "line"),
])
def test_example_kind(shape, mask, kind):
  assert figures.example_kind(shape, mask) == kind


def test_example_layouts_render(tmp_path):
  """Images, masked point sets and plain vectors; samples on a given scale; latents with and without labels."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(4, 8, 8, 1)).astype(np.float32)
  points = rng.uniform(size=(4, 20, 3)).astype(np.float32)
  masks = (np.arange(20)[None] < np.array([[20], [12], [5], [0]])).astype(np.float32)  # one empty set
  vectors = rng.normal(size=(3, 10)).astype(np.float32)
  paths = [
      figures.reconstruction_grid(images, images * 0.9, tmp_path / "recon-images.png", "images"),
      figures.reconstruction_grid(points, points[:, ::-1], tmp_path / "recon-points.png", "points", masks=masks),
      figures.reconstruction_grid(vectors, vectors + 0.1, tmp_path / "recon-vectors.png", "vectors"),
      figures.sample_grid(images[:, :, :, 0].reshape(4, 64), tmp_path / "samples-flat.png", "flat", scale=(0, 1)),
      figures.sample_grid(points, tmp_path / "samples-points.png", "points"),
      figures.latent_scatter(rng.normal(size=(50, 6)), tmp_path / "latent-labels.png", "latent",
                             labels=rng.integers(0, 10, 50)),
      figures.latent_scatter(rng.normal(size=(50, 2)), tmp_path / "latent-plain.png", "latent"),
  ]
  for path in paths:
    _png_size(path)
  assert figures.value_range(points, masks) == pytest.approx((points[..., 2][masks > 0].min(),
                                                              points[..., 2][masks > 0].max()))
  assert not list(tmp_path.glob("*.tmp"))


def test_curves_skip_what_was_not_logged(tmp_path):
  rows = [{"step": "10", "split": "train", "loss": "0.5", "lr": "", "skipped": "0", "mse": "0.5"},
          {"step": "20", "split": "val", "loss": "0.4", "lr": "", "skipped": "", "mse": "0.4"}]
  assert figures.metric_columns(rows) == ["mse"]  # an all-zero guard counter is not a metric
  assert figures.lr_curve(rows, tmp_path / "lr.png", "lr") is None
  assert figures.loss_curves([], tmp_path / "loss.png", "loss") is None
  assert figures.loss_curves(rows, tmp_path / "loss.png", "loss").exists()
