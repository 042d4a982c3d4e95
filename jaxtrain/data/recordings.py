"""Synthetic recording sessions: neurons of a shared visual system, recorded in several sessions.

Every session shows grayscale stimuli (smoothed noise, 16x16) drawn from one shared pool
and records a different number of neurons. Each neuron is a linear-nonlinear model on a
shared latent feature space: four oriented Gabor filters, rectified (relu), pooled by a
Gaussian around the neuron's receptive-field centre with its own orientation weights,
then softplus -> a Poisson rate. A per-stimulus `contrast` scales the image, so
low-contrast trials carry less signal (the column contrast-weighted sampling reads).

Written as a dataset_dir directory (jaxtrain/data/dataset_dir.py): one YAML per session
next to `files/<session>.npz` (train trials) and `files/<session>_val.npz` (held-out
stimuli, shared by all sessions). Every file has the keys

    x            [n, H, W, 1] float32   the stimulus as shown (contrast applied)
    responses    [n, N] float32         Poisson spike counts (0 for padding neurons)
    rates        [n, N] float32         the ground-truth rates the counts were drawn from
    neuron_mask  [n, N] float32         1 for a recorded neuron, 0 for padding
    contrast     [n] float32
    dataset      [n] int32              the session's position in file-name order

with N = `max_neurons` for every session, so all sessions share one batch shape.

    python -m jaxtrain.data.recordings OUT_DIR --sessions 6 --seed 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

IMAGE_SIZE = 16
NUM_ORIENTATIONS = 4
GABOR_SIZE = 7


def gabor_bank(size: int = GABOR_SIZE, count: int = NUM_ORIENTATIONS) -> np.ndarray:
  """`count` zero-mean, unit-norm Gabor filters [count, size, size] at evenly spaced orientations."""
  half = size // 2
  yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
  filters = []
  for k in range(count):
    theta = np.pi * k / count
    along = xx * np.cos(theta) + yy * np.sin(theta)
    g = np.exp(-(xx**2 + yy**2) / (2 * 1.8**2)) * np.cos(2 * np.pi * along / 5.0)
    g -= g.mean()
    filters.append(g / np.linalg.norm(g))
  return np.stack(filters)


def stimuli(rng: np.random.Generator, count: int, size: int = IMAGE_SIZE) -> np.ndarray:
  """Smoothed white noise, each image scaled to zero mean and unit std: [count, size, size]."""
  from scipy import ndimage  # only when generating: importing SciPy would slow every run's start

  noise = ndimage.gaussian_filter(rng.standard_normal((count, size, size)), sigma=(0, 0.8, 0.8), mode="wrap")
  noise -= noise.mean(axis=(1, 2), keepdims=True)
  return noise / noise.std(axis=(1, 2), keepdims=True)


def latent_features(images: np.ndarray, filters: np.ndarray) -> np.ndarray:
  """The shared feature space: relu(image * filter) maps, [n, H, W, orientations]."""
  from scipy import ndimage

  maps = [ndimage.correlate(images, f[None], mode="constant") for f in filters]
  return np.maximum(np.stack(maps, axis=-1), 0.0)


def session_neurons(rng: np.random.Generator, count: int, size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
  """Ground-truth tuning of `count` neurons: Gaussian spatial pooling [count, H, W], orientation
  weights [count, K] (mostly one preferred orientation) and a baseline."""
  centres = rng.uniform(4, size - 4, (count, 2))
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
  pooling = np.exp(-((yy - centres[:, 0, None, None])**2 + (xx - centres[:, 1, None, None])**2) / (2 * 1.5**2))
  pooling /= pooling.sum(axis=(1, 2), keepdims=True)
  preferred = rng.integers(0, NUM_ORIENTATIONS, count)
  weights = 0.15 * rng.random((count, NUM_ORIENTATIONS))
  weights[np.arange(count), preferred] += 1.0
  return {"pooling": pooling, "weights": weights, "baseline": rng.normal(0.0, 0.3, count)}


def neuron_rates(features: np.ndarray, neurons: dict[str, np.ndarray], scale: np.ndarray) -> np.ndarray:
  """Poisson rates [n, count]: softplus(gain * drive / typical drive + baseline), ~2 spikes on average."""
  drive = np.einsum("nhwk,chw,ck->nc", features, neurons["pooling"], neurons["weights"])
  z = drive / scale - 1.0  # the drive relative to its typical size at full contrast
  return 4.0 * np.logaddexp(0.0, 2.0 * z + neurons["baseline"])


def _session_arrays(images: np.ndarray, contrast: np.ndarray, features: np.ndarray, neurons: dict,
                    scale: np.ndarray, max_neurons: int, index: int, rng: np.random.Generator) -> dict:
  """One file's arrays (see the module docstring), neurons padded to `max_neurons`."""
  n, count = len(images), len(scale)
  rates = np.zeros((n, max_neurons), np.float32)
  rates[:, :count] = neuron_rates(features, neurons, scale)
  mask = np.zeros((n, max_neurons), np.float32)
  mask[:, :count] = 1.0
  return {"x": images[..., None].astype(np.float32),
          "responses": rng.poisson(rates).astype(np.float32),
          "rates": rates, "neuron_mask": mask, "contrast": contrast.astype(np.float32),
          "dataset": np.full(n, index, np.int32)}


def generate(out_dir: str | Path, sessions: int = 6, seed: int = 0, trials: tuple[int, int] = (1200, 2000),
             neurons: tuple[int, int] = (20, 60), held_out: int = 300, pool: int = 4000) -> Path:
  """Writes `sessions` recording sessions into `out_dir` (see the module docstring); returns it.

  Deterministic in `seed`: the same arguments give byte-identical files.
  """
  rng = np.random.default_rng(seed)
  filters = gabor_bank()
  pool_images = stimuli(rng, pool)
  val_images = stimuli(rng, held_out)
  val_contrast = rng.uniform(0.2, 1.0, held_out)
  # Contrast scales the image, hence (relu is homogeneous) every feature map.
  pool_features = latent_features(pool_images, filters)
  val_features = latent_features(val_images, filters)
  out = Path(out_dir)
  (out / "files").mkdir(parents=True, exist_ok=True)
  for index in range(sessions):
    name = f"session_{index:02d}"
    count = int(rng.integers(neurons[0], neurons[1] + 1))
    tuning = session_neurons(rng, count)
    # Per-neuron drive scale at full contrast, so every neuron spans the softplus alike.
    scale = np.einsum("nhwk,chw,ck->nc", pool_features[:500], tuning["pooling"], tuning["weights"]).mean(0)
    shown = np.sort(rng.choice(pool, int(rng.integers(trials[0], trials[1] + 1)), replace=False))
    contrast = rng.uniform(0.2, 1.0, len(shown))
    train = _session_arrays(pool_images[shown] * contrast[:, None, None], contrast,
                            pool_features[shown] * contrast[:, None, None, None], tuning, scale, neurons[1],
                            index, rng)
    val = _session_arrays(val_images * val_contrast[:, None, None], val_contrast,
                          val_features * val_contrast[:, None, None, None], tuning, scale, neurons[1], index, rng)
    np.savez(out / "files" / f"{name}.npz", **train)
    np.savez(out / "files" / f"{name}_val.npz", **val)
    (out / f"{name}.yaml").write_text(
        f"# Synthetic session {index}: {count} neurons, {len(shown)} trials (jaxtrain/data/recordings.py).\n"
        f"path: files/{name}.npz\nval_path: files/{name}_val.npz\noptions:\n  neurons: {count}\n")
  return out


def ensure_recordings(root: str | Path, seed: int = 0, sessions: int = 6) -> str:
  """`<root>/recordings_<seed>`, generated on first use (into a temporary directory, then
  renamed, so a concurrent or interrupted generation never leaves a half-written one)."""
  target = Path(root).expanduser() / f"recordings_{seed}"
  if not target.is_dir():
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".recordings_{seed}_", dir=target.parent))
    generate(scratch, sessions=sessions, seed=seed)
    try:
      os.rename(scratch, target)
    except OSError:  # another process finished first: its files are the same
      shutil.rmtree(scratch, ignore_errors=True)
  return str(target.absolute())


def main(argv: list[str] | None = None) -> None:
  """Command line: `python -m jaxtrain.data.recordings OUT_DIR [--sessions N] [--seed S]`."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out_dir")
  parser.add_argument("--sessions", type=int, default=6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--held-out", type=int, default=300, help="held-out stimuli per session (shared)")
  args = parser.parse_args(argv)
  out = generate(args.out_dir, sessions=args.sessions, seed=args.seed, held_out=args.held_out)
  print(f"wrote {args.sessions} sessions to {out}")


if __name__ == "__main__":
  main()
