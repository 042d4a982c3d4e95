"""Solved tic-tac-toe: every legal position, its optimal moves and its game value (data=tictactoe).

Every position reachable from the empty board in which the game is not over
(4,520 of them) is solved by memoised minimax. Each example, from the side to
move's point of view:

  x        float32 [3, 3, 2]  plane 0: the side to move's stones, plane 1: the opponent's
  legal    float32 [9]        1 for an empty cell
  policy   float32 [9]        uniform over the optimal moves (those that keep the game value)
  value    float32            game value for the side to move: +1 win, 0 draw, -1 loss
  quality  float32            how decisive the position is: 0.1 + the share of legal moves that
                              lose value (positions where every move is fine teach the policy little)
  plies    int32              plies to the end under optimal play (quickest win, slowest loss; a
                              draw fills the board)
  symmetry_class int32        the position's class under the 8 board symmetries

`python -m jaxtrain.data.tictactoe OUT.npz` writes them; data=tictactoe reads a
cached copy (generated on first use under $JAXTRAIN_CACHE_DIR, else
$XDG_CACHE_HOME/jaxtrain or ~/.cache/jaxtrain) and holds out whole symmetry classes, so that no rotation or
reflection of a validation position is trained on. The `tictactoe_symmetry`
augmentation applies one of the 8 symmetries per row to the board and, alike,
to its policy target and legal-move mask.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxtrain.config.schema import DataConfig
from jaxtrain.data.augment import dihedral_transform, register_augmentation
from jaxtrain.data.cache import CACHE_ENV, data_cache_dir, write_npz_atomically
from jaxtrain.errors import ConfigError

Board = tuple[int, ...]  # 9 cells, row-major: 0 empty, 1 = X (moves first), 2 = O
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
FILE_NAME = "tictactoe_v1.npz"


def winner(board: Board) -> int:
  """1 or 2 when that player has three in a row, else 0."""
  for a, b, c in LINES:
    if board[a] and board[a] == board[b] == board[c]:
      return board[a]
  return 0


def to_move(board: Board) -> int:
  """The player whose turn it is (X moves first)."""
  return 1 if board.count(1) == board.count(2) else 2


def is_over(board: Board) -> bool:
  return bool(winner(board)) or 0 not in board


def play(board: Board, cell: int) -> Board:
  return board[:cell] + (to_move(board),) + board[cell + 1:]


@functools.lru_cache(maxsize=None)
def solve(board: Board) -> tuple[int, int]:
  """(value, plies) for the side to move: value in {-1, 0, 1}; plies to the end when the
  winner wins as fast and the loser loses as slowly as it can."""
  if winner(board):
    return -1, 0  # the previous move won
  if 0 not in board:
    return 0, 0
  outcomes = [solve(play(board, cell)) for cell in range(9) if board[cell] == 0]
  # Best value first; among equal values a quick win, a slow loss.
  value, plies = max(((-v, p) for v, p in outcomes), key=lambda vp: (vp[0], -vp[0] * vp[1]))
  return value, plies + 1


def optimal_moves(board: Board) -> list[int]:
  """The empty cells whose move keeps the position's game value."""
  value = solve(board)[0]
  return [cell for cell in range(9) if board[cell] == 0 and -solve(play(board, cell))[0] == value]


def reachable_positions() -> list[Board]:
  """Every position reachable from the empty board in which the game is not over, in
  depth-first order from the empty board (deterministic)."""
  seen: set[Board] = set()
  order: list[Board] = []
  stack: list[Board] = [(0,) * 9]
  while stack:
    board = stack.pop()
    if board in seen or is_over(board):
      continue
    seen.add(board)
    order.append(board)
    stack.extend(play(board, cell) for cell in range(8, -1, -1) if board[cell] == 0)
  return order


def encode(boards: np.ndarray) -> np.ndarray:
  """[N, 9] cells (0/1/2) -> [N, 3, 3, 2] float32 planes (side to move, opponent)."""
  boards = np.asarray(boards)
  mover = np.where((boards == 1).sum(1) == (boards == 2).sum(1), 1, 2)[:, None]
  opponent = 3 - mover
  planes = np.stack([boards == mover, boards == opponent], axis=-1).astype(np.float32)
  return planes.reshape(-1, 3, 3, 2)


def symmetry_classes(boards: np.ndarray) -> np.ndarray:
  """int32 [N]: the same id for boards that are rotations or reflections of each other."""
  grids = np.asarray(boards).reshape(-1, 3, 3)
  powers = 3 ** np.arange(9)
  codes = np.stack([(dihedral_transform(grids, k).reshape(-1, 9) * powers).sum(1) for k in range(8)])
  _, classes = np.unique(codes.min(0), return_inverse=True)
  return classes.astype(np.int32)


def solved_arrays() -> dict[str, np.ndarray]:
  """Every non-terminal position with its targets (see the module docstring)."""
  positions = reachable_positions()
  boards = np.array(positions, np.int8)
  policy = np.zeros((len(positions), 9), np.float32)
  values, plies = np.zeros(len(positions), np.float32), np.zeros(len(positions), np.int32)
  for i, board in enumerate(positions):
    policy[i, optimal_moves(board)] = 1.0
    values[i], plies[i] = solve(board)
  legal = (boards == 0).astype(np.float32)
  optimal_count = policy.sum(1)
  mistakes = (legal.sum(1) - optimal_count) / legal.sum(1)
  return {"x": encode(boards), "legal": legal, "policy": policy / optimal_count[:, None], "value": values,
          "quality": (0.1 + mistakes).astype(np.float32), "plies": plies,
          "symmetry_class": symmetry_classes(boards), "board": boards}


def write_npz(path: str | Path) -> Path:
  """Writes the solved positions to `path` (uncompressed, so a reader can memory-map it)."""
  path = Path(path)
  # Written beside and renamed: concurrent first uses never read a half-written file.
  write_npz_atomically(path, solved_arrays())
  return path


def cached_npz() -> Path:
  """The solved positions' NPZ in the cache directory, written on first use."""
  path = data_cache_dir() / FILE_NAME
  if not path.exists():
    try:
      write_npz(path)
    except OSError as err:
      raise ConfigError(f"data=tictactoe: cannot write {path} ({err.strerror}); set {CACHE_ENV} to a "
                        "writable directory") from None
  return path


def split_by_symmetry_class(classes: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train rows, val rows): a random `val_fraction` of the symmetry classes is held out whole."""
  if not 0.0 < val_fraction < 1.0:
    raise ConfigError(f"data.val_fraction={val_fraction}: must be strictly between 0 and 1")
  ids = np.unique(classes)
  held_out = np.random.default_rng(seed).permutation(ids)[:max(1, int(round(len(ids) * val_fraction)))]
  is_val = np.isin(classes, held_out)
  return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def tictactoe(cfg: DataConfig):
  """Source `data=tictactoe`: the solved positions, split by symmetry class (data.val_fraction,
  data.split_seed)."""
  from jaxtrain.data.sources import Splits  # sources imports this module

  with np.load(cached_npz()) as npz:
    arrays = {key: npz[key] for key in npz.files if key != "board"}
  train_rows, val_rows = split_by_symmetry_class(arrays["symmetry_class"], cfg.val_fraction, cfg.split_seed)
  return Splits(train={k: v[train_rows] for k, v in arrays.items()},
                val={k: v[val_rows] for k, v in arrays.items()})


def board_symmetry(batch: dict[str, np.ndarray], symmetries: np.ndarray, board_key: str = "x",
                   cell_keys: Sequence[str] = ("policy", "legal")) -> dict[str, np.ndarray]:
  """Row i of the batch under symmetry symmetries[i] (0..7): the board [B, 3, 3, C] and each
  per-cell key [B, 9] (policy target, legal mask) transformed alike."""
  out = {key: np.array(batch[key], copy=True) for key in (board_key, *cell_keys)}
  for k in np.unique(symmetries):
    rows = symmetries == k
    out[board_key][rows] = dihedral_transform(batch[board_key][rows], int(k))
    for key in cell_keys:
      cells = batch[key][rows].reshape(-1, 3, 3)
      out[key][rows] = dihedral_transform(cells, int(k)).reshape(-1, 9)
  return {**batch, **out}


@register_augmentation("tictactoe_symmetry")
def tictactoe_symmetry(batch: dict[str, np.ndarray], rng: np.random.Generator, *, board_key: str = "x",
                       cell_keys: Sequence[str] = ("policy", "legal")) -> dict[str, np.ndarray]:
  """One of the 8 board symmetries per row, applied to the board and its per-cell targets."""
  return board_symmetry(batch, rng.integers(0, 8, len(batch[board_key])), board_key, tuple(cell_keys))


def main(argv: Sequence[str]) -> int:
  """`python -m jaxtrain.data.tictactoe OUT.npz`."""
  if len(argv) != 1:
    print("usage: python -m jaxtrain.data.tictactoe OUT.npz", file=sys.stderr)
    return 2
  arrays = solved_arrays()
  path = write_npz(argv[0])
  print(f"{path}: {len(arrays['x'])} positions, {len(np.unique(arrays['symmetry_class']))} symmetry classes")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
