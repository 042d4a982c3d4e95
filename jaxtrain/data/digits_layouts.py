"""Other layouts of scikit-learn's digits: images [8, 8, 1] and point clouds [P, 3] with a mask.

All layouts come from the same flat pixels, so `data=digits`, `data=digits_images`
and `data=digits_points` share the split (same seed, same rows) and the labels.
"""

from __future__ import annotations

import numpy as np

SIDE = 8  # the digits are 8x8 images
MAX_POINTS = SIDE * SIDE  # every pixel could be lit, so no digit is ever cut


def as_images(flat: np.ndarray) -> np.ndarray:
  """[N, 64] pixels -> [N, 8, 8, 1] images (row-major, one channel)."""
  return flat.reshape(len(flat), SIDE, SIDE, 1)


def as_point_clouds(flat: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
  """[N, 64] pixels in [0, 1] -> points [N, P, 3] and mask [N, P] (1.0 for real points).

  Each pixel with nonzero intensity becomes a point (row / 7, col / 7, intensity),
  so all three features lie in [0, 1]. Points keep the image's row-major order;
  the padding rows are zeros with mask 0.
  """
  lit = flat > 0
  counts = lit.sum(axis=1)
  if counts.max(initial=0) > max_points:
    raise ValueError(f"a digit has {counts.max()} lit pixels, more than max_points={max_points}")
  rows, cols = np.divmod(np.arange(SIDE * SIDE), SIDE)
  coords = np.stack([rows, cols], axis=1).astype(np.float32) / (SIDE - 1)
  # Slot of each lit pixel within its example: how many lit pixels come before it.
  slot = np.cumsum(lit, axis=1) - 1
  example, pixel = np.nonzero(lit)
  points = np.zeros((len(flat), max_points, 3), np.float32)
  points[example, slot[example, pixel], :2] = coords[pixel]
  points[example, slot[example, pixel], 2] = flat[example, pixel]
  mask = (np.arange(max_points)[None, :] < counts[:, None]).astype(np.float32)
  return points, mask
