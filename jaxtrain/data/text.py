"""Byte-level text corpus: the files of a directory as windows of bytes.

By default the corpus is the Python standard library's own source (the `*.py`
files next to `os.py`), which ships with every Python, so it is there offline.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxtrain.config.schema import DataConfig
from jaxtrain.errors import ConfigError


def default_text_dir() -> str:
  """The standard library's source directory."""
  return os.path.dirname(os.__file__)


def read_corpus(text_dir: str, pattern: str, max_bytes: int) -> bytes:
  """The matching files' bytes concatenated in sorted path order, cut at `max_bytes`."""
  root = Path(text_dir).expanduser()
  if not root.is_dir():
    raise ConfigError(f"data.text_dir={text_dir!r}: not a directory")
  chunks, size = [], 0
  for path in sorted(p for p in root.glob(pattern) if p.is_file()):
    if size >= max_bytes:
      break
    chunk = path.read_bytes()[:max_bytes - size]
    chunks.append(chunk)
    size += len(chunk)
  if size == 0:
    raise ConfigError(f"data.text_dir={text_dir!r}: no non-empty files match data.text_glob={pattern!r}")
  return b"".join(chunks)


def text_windows(cfg: DataConfig) -> dict[str, np.ndarray]:
  """{"tokens": [N, seq_len + 1] int32}: the corpus cut into non-overlapping windows
  (inputs are a window's first seq_len bytes, targets its last seq_len)."""
  if cfg.seq_len < 1:
    raise ConfigError(f"data.seq_len={cfg.seq_len}: must be at least 1")
  if cfg.max_bytes < 1:
    raise ConfigError(f"data.max_bytes={cfg.max_bytes}: must be positive")
  text_dir = cfg.text_dir or default_text_dir()
  corpus = np.frombuffer(read_corpus(text_dir, cfg.text_glob, cfg.max_bytes), np.uint8)
  window = cfg.seq_len + 1
  count = len(corpus) // window
  if count < 2:
    raise ConfigError(f"data.text_dir={text_dir!r}: {len(corpus)} bytes make fewer than 2 windows of "
                      f"data.seq_len+1={window} bytes")
  return {"tokens": corpus[:count * window].reshape(count, window).astype(np.int32)}


def text(cfg: DataConfig):
  """Source `data=text`: the windows split at random into train and val (by window, with data.split_seed)."""
  from jaxtrain.data.sources import split_arrays  # sources imports this module

  return split_arrays(text_windows(cfg), cfg.val_fraction, cfg.split_seed)


def unigram_bits_per_byte(train_tokens: np.ndarray, val_tokens: np.ndarray) -> float:
  """Cross-entropy (bits per byte) on val of the train split's byte frequencies
  (add-one smoothed): the bar a model must clear to use any context at all."""
  counts = np.bincount(train_tokens[:, 1:].ravel(), minlength=256)[:256] + 1.0
  log_probs = np.log2(counts / counts.sum())
  return float(-log_probs[val_tokens[:, 1:].ravel()].mean())
