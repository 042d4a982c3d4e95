"""Figures of a run as PNG files: curves from scalars.csv, examples, latent projections.

Pure host-side rendering: every function takes numpy arrays or rows already
read from disk and writes one PNG. Matplotlib runs on the Agg backend through
explicit `Figure` objects, never pyplot, so no global figure state is kept
and rendering is safe outside the main thread.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxtrain.track.scalars import LEADING, TRAILING

FIGURES_DIR = "figures"
# The guard's counters are columns of scalars.csv but not metrics; they get a
# panel only when something was actually skipped.
QUIET_WHEN_ZERO = ("bad_steps", "skipped")
IMAGE_CHANNELS = (1, 3, 4)


def figure_path(figures_dir: Path, family: str, moment: str, step: int) -> Path:
  """<figures_dir>/<family>-<moment>-<step>.png, moment being `eval` or `end`."""
  return Path(figures_dir) / f"{family}-{moment}-{int(step)}.png"


def save(fig: Figure, path: Path) -> Path:
  """Writes `fig` as a PNG atomically (a reader never sees half a file) and frees it."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  FigureCanvasAgg(fig)
  fig.savefig(tmp, format="png", dpi=100)
  os.replace(tmp, path)
  fig.clear()
  return path


# ---------------------------------------------------------------------------
# Curves over steps, from the rows of facts/scalars.csv.

def series(rows: Sequence[Mapping[str, str]], column: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (steps, values)} of one column, skipping empty cells; steps ascending."""
  by_split: dict[str, list[tuple[float, float]]] = {}
  for row in rows:
    value = row.get(column, "")
    if value in ("", None):
      continue
    by_split.setdefault(row["split"], []).append((float(row["step"]), float(value)))
  out = {}
  for split, points in by_split.items():
    points.sort()
    steps, values = zip(*points)
    out[split] = (np.asarray(steps), np.asarray(values))
  return out


def metric_columns(rows: Sequence[Mapping[str, str]]) -> list[str]:
  """The logged metrics other than the loss and the loop's own figures (lr, speed, memory)."""
  if not rows:
    return []
  names = [c for c in rows[0] if c not in LEADING and c not in TRAILING]
  kept = []
  for name in names:
    values = [float(r[name]) for r in rows if r.get(name) not in ("", None)]
    if not values or (name in QUIET_WHEN_ZERO and not any(values)):
      continue
    kept.append(name)
  return kept


def _plot_series(ax, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], ylabel: str) -> None:
  for split in sorted(curves):
    steps, values = curves[split]
    # Evaluations are sparse: markers show where each value was measured.
    ax.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=3, label=split)
  positive = [v for _, vals in curves.values() for v in vals if np.isfinite(v)]
  # Losses that fall by an order of magnitude are unreadable on a linear axis.
  if positive and min(positive) > 0 and max(positive) / min(positive) > 10:
    ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  if curves:
    ax.legend(title="split")


def loss_curves(rows: Sequence[Mapping[str, str]], path: Path, title: str) -> Path | None:
  """Train and validation loss over steps (one line per split). None when no loss was logged."""
  curves = series(rows, "loss")
  if not curves:
    return None
  fig = Figure(figsize=(7, 4.5), layout="tight")
  ax = fig.add_subplot()
  _plot_series(ax, curves, "loss")
  ax.set_title(title)
  return save(fig, path)


def metric_panels(rows: Sequence[Mapping[str, str]], path: Path, title: str) -> Path | None:
  """One panel per logged metric (see `metric_columns`), each split a line. None when there are none."""
  names = metric_columns(rows)
  if not names:
    return None
  cols = min(3, len(names))
  nrows = math.ceil(len(names) / cols)
  fig = Figure(figsize=(4.5 * cols, 3.5 * nrows), layout="constrained")
  fig.suptitle(title)
  for i, name in enumerate(names):
    ax = fig.add_subplot(nrows, cols, i + 1)
    _plot_series(ax, series(rows, name), name)
    ax.set_title(name)
  return save(fig, path)


def lr_curve(rows: Sequence[Mapping[str, str]], path: Path, title: str) -> Path | None:
  """The learning rate of the train steps. None when no lr was logged."""
  curves = series(rows, "lr")
  if "train" not in curves:
    return None
  steps, values = curves["train"]
  fig = Figure(figsize=(7, 4), layout="tight")
  ax = fig.add_subplot()
  ax.plot(steps, values, label="learning rate")
  ax.set_xlabel("step")
  ax.set_ylabel("learning rate")
  ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
  ax.grid(True, alpha=0.3)
  ax.legend()
  ax.set_title(title)
  return save(fig, path)


# ---------------------------------------------------------------------------
# Examples: images, point sets or plain vectors, whichever they look like.

def example_kind(shape: Sequence[int], has_mask: bool) -> str:
  """How one example of this shape is drawn: `image`, `points` or `line`.

  [D] with D a square >= 16 is a flattened grey image (digits: 64 -> 8x8);
  [H, W] and [H, W, C] with C in 1, 3, 4 are images; [P, 3] with a mask is a
  point set; anything else is drawn as a line over its flattened values.
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) == 1 and shape[0] >= 16 and math.isqrt(shape[0]) ** 2 == shape[0]:
    return "image"
  if len(shape) == 2 and has_mask and shape[1] == 3:
    return "points"
  if len(shape) == 2 and min(shape) >= 4:
    return "image"
  if len(shape) == 3 and shape[2] in IMAGE_CHANNELS and min(shape[:2]) >= 4:
    return "image"
  return "line"


def as_image(example: np.ndarray) -> np.ndarray:
  """[D] -> [sqrt D, sqrt D]; [H, W, 1] -> [H, W]; [H, W, 3|4] kept."""
  if example.ndim == 1:
    side = math.isqrt(example.shape[0])
    return example.reshape(side, side)
  if example.ndim == 3 and example.shape[2] == 1:
    return example[..., 0]
  return example


def _draw_example(ax, example: np.ndarray, kind: str, scale: tuple[float, float], mask: np.ndarray | None,
                  extent: tuple[float, float, float, float] | None = None) -> None:
  """One example on `ax`; `scale` is the colour (or y) range, `extent` the point sets' (x0, x1, y0, y1)."""
  if kind == "image":
    image = as_image(example)
    lo, hi = scale
    if image.ndim == 3:  # colour: matplotlib wants floats in [0, 1]
      ax.imshow(np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1), interpolation="nearest")
    else:
      ax.imshow(image, cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
  elif kind == "points":
    # Seen from above like an image (first coordinate down, second across),
    # shaded by the third: the digits' (row, col, intensity) points read as digits.
    points = example if mask is None else example[np.asarray(mask) > 0]
    ax.scatter(points[:, 1], points[:, 0], s=30, c=points[:, 2], cmap="gray_r", vmin=scale[0], vmax=scale[1],
               edgecolors="0.6", linewidths=0.3)
    if extent is not None:  # the same frame in every panel, so positions compare
      ax.set_xlim(extent[0], extent[1])
      ax.set_ylim(extent[2], extent[3])
    ax.invert_yaxis()
    ax.set_aspect("equal", adjustable="box" if extent is not None else "datalim")
    ax.set_xticks([])
    ax.set_yticks([])
  else:
    ax.plot(example.reshape(-1), linewidth=1)
    margin = 0.1 * (scale[1] - scale[0])
    ax.set_ylim(scale[0] - margin, scale[1] + margin)
    ax.tick_params(labelsize=6)


def point_extent(points: np.ndarray, masks: np.ndarray | None = None) -> tuple[float, float, float, float]:
  """(x0, x1, y0, y1) around the real points of a batch [N, P, 3], as drawn (second coordinate across)."""
  points = np.asarray(points, np.float64)
  real = points.reshape(-1, points.shape[-1]) if masks is None else points[np.asarray(masks) > 0]
  real = real[np.all(np.isfinite(real[:, :2]), axis=1)]
  if not len(real):
    return 0.0, 1.0, 0.0, 1.0
  (y0, x0), (y1, x1) = real[:, :2].min(axis=0), real[:, :2].max(axis=0)
  pad_x, pad_y = 0.08 * max(x1 - x0, 1e-6), 0.08 * max(y1 - y0, 1e-6)
  return x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y


def value_range(examples: np.ndarray, masks: np.ndarray | None = None) -> tuple[float, float]:
  """The colour scale of a batch of examples: all values, or for point sets the third
  coordinate of the real points."""
  examples = np.asarray(examples, np.float64)
  if example_kind(examples.shape[1:], masks is not None) == "points":
    examples = examples[..., 2] if masks is None else examples[..., 2][np.asarray(masks) > 0]
  values = examples.reshape(-1)
  values = values[np.isfinite(values)]
  if not values.size:
    return 0.0, 1.0
  lo, hi = float(values.min()), float(values.max())
  return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def reconstruction_grid(inputs: np.ndarray, outputs: np.ndarray, path: Path, title: str,
                        masks: np.ndarray | None = None) -> Path:
  """Inputs (top row) above their reconstructions (bottom row), on one shared value scale."""
  kind = example_kind(inputs.shape[1:], masks is not None)
  n = inputs.shape[0]
  scale = value_range(inputs, masks)
  extent = None
  if kind == "points":  # a frame around both rows: a stray decoded point stays in sight
    (ix0, ix1, iy0, iy1), (ox0, ox1, oy0, oy1) = point_extent(inputs, masks), point_extent(outputs)
    extent = (min(ix0, ox0), max(ix1, ox1), min(iy0, oy0), max(iy1, oy1))
  size = 1.6 if kind == "image" else 2.2
  fig = Figure(figsize=(max(4.0, size * n), 2 * size + 0.8), layout="constrained")
  fig.suptitle(title)
  # The mask marks the inputs' real points; every decoded point counts.
  for row, (batch, label, row_masks) in enumerate(((inputs, "input", masks), (outputs, "reconstruction", None))):
    for i in range(n):
      ax = fig.add_subplot(2, n, row * n + i + 1)
      _draw_example(ax, batch[i], kind, scale, None if row_masks is None else row_masks[i], extent)
      if i == 0:
        ax.set_ylabel(label, fontsize=9)  # ticks are hidden, the row's name is not
  return save(fig, path)


def sample_grid(samples: np.ndarray, path: Path, title: str, masks: np.ndarray | None = None,
                scale: tuple[float, float] | None = None) -> Path:
  """Generated examples in a near-square grid; `scale`: the data's colour scale (default: the samples')."""
  # Generated point sets come without a mask: every point is real.
  points = masks is not None or (samples.ndim == 3 and samples.shape[-1] == 3)
  kind = example_kind(samples.shape[1:], points)
  n = samples.shape[0]
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  size = 1.6 if kind == "image" else 2.2
  fig = Figure(figsize=(max(4.0, size * cols), size * rows + 0.6), layout="constrained")
  fig.suptitle(title)
  scale = scale or value_range(samples, masks)
  extent = point_extent(samples, masks) if kind == "points" else None
  for i in range(n):
    ax = fig.add_subplot(rows, cols, i + 1)
    _draw_example(ax, samples[i], kind, scale, None if masks is None else masks[i], extent)
  return save(fig, path)


def latent_scatter(codes: np.ndarray, path: Path, title: str, labels: np.ndarray | None = None,
                   seed: int = 0) -> Path:
  """2-D PCA projection of the codes [N, D], coloured by label when given."""
  from sklearn.decomposition import PCA  # only runs that draw this figure pay the import

  codes = np.asarray(codes, np.float64).reshape(codes.shape[0], -1)
  if codes.shape[1] > 2:
    pca = PCA(n_components=2, random_state=seed).fit(codes)
    points = pca.transform(codes)
    ratio = pca.explained_variance_ratio_
    axis_names = [f"PC{i + 1} ({100 * r:.0f}% of variance)" for i, r in enumerate(ratio)]
  else:
    points = np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
    axis_names = ["z1", "z2" if codes.shape[1] == 2 else "(none)"]
  fig = Figure(figsize=(6.5, 5.5), layout="tight")
  ax = fig.add_subplot()
  if labels is not None:
    labels = np.asarray(labels).reshape(-1)
    classes = np.unique(labels)
    if len(classes) <= 20:
      palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
      for index, cls in enumerate(classes):
        chosen = labels == cls
        ax.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.8, label=str(cls), color=palette(index))
      ax.legend(title="label", fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
      mappable = ax.scatter(points[:, 0], points[:, 1], s=8, c=labels, cmap="viridis")
      fig.colorbar(mappable, ax=ax, label="label")
  else:
    ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.8)
  ax.set_xlabel(axis_names[0])
  ax.set_ylabel(axis_names[1])
  ax.grid(True, alpha=0.3)
  ax.set_title(title)
  return save(fig, path)
