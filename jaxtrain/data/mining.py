"""Hard-example mining: per-example losses from training steer which examples are drawn.

The train step reports each example's loss with the batch's example ids
(`with_example_losses`); an action (jaxtrain/actions/mining.py) hands them to
the host-side `MiningTable`, an EMA of every example's loss. Sampling never
sees live changes: the table is published in numbered versions on a fixed
schedule, every `R = data.mining.every` steps,

  version v (v >= 1) is made at step v*R from the losses of batches < (v-1)*R,
  batches [r*R, (r+1)*R) sample with version max(r-1, 0),

so batch i depends only on (seed, i, the losses of batches before (r-2)*R),
whatever the prefetch depth or the host's timing: the losses folded in are
long computed (no wait on the device), and the pipeline may read up to R
batches ahead before it waits for a version. The table (both live versions
plus the losses not yet folded in) is part of the Grain iterator's state, so
it is saved and restored with every checkpoint.
"""

from __future__ import annotations

import base64
import threading
from typing import Any, Callable, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.core.step import WEIGHT_KEY, example_weights
from jaxtrain.data.weighted import inverse_cdf_draw
from jaxtrain.errors import ConfigError, IncompatibleCheckpoint

INDEX_KEY = "index"  # int32 [B]: each row's example id over all datasets (dataset offset + row)
LOSS_METRIC, INDEX_METRIC = "mining/loss", "mining/index"
# Per-example arrays the train step returns beside its scalar metrics.
PER_EXAMPLE_METRICS = (LOSS_METRIC, INDEX_METRIC)


def example_losses(loss_fn: Callable, state: Any, batch: Any) -> jax.Array:
  """Each example's loss [B] at `state`, for a task loss that is a weighted mean of
  per-example terms (as `weighted_mean` makes it).

  With L = sum(w l) / sum(w), dL/dw_i = (l_i - L) / sum(w), so one cheap
  backward pass to the weights gives every l_i; nothing is asked of the task.
  """
  weight = example_weights(batch)

  def loss_of_weights(w):
    return loss_fn(state.params, state.model_state, {**batch, WEIGHT_KEY: w}, state.step_rng(), True)[0]

  mean, pullback = jax.vjp(loss_of_weights, weight)
  (d_weight,) = pullback(jnp.ones_like(mean))
  return jax.lax.stop_gradient(mean + jnp.sum(weight) * d_weight)


def with_example_losses(step_fn: Callable, loss_fn: Callable) -> Callable:
  """`step_fn` whose metrics also carry the batch's example ids and their losses (before the update)."""

  def step(state, batch):
    losses = example_losses(loss_fn, state, batch)
    new_state, metrics = step_fn(state, batch)
    return new_state, {**metrics, LOSS_METRIC: losses, INDEX_METRIC: batch[INDEX_KEY]}

  return step


def check_config(cfg: Any) -> None:
  """One-line ConfigError for data.mining values outside their ranges."""
  checks = (("mix", 0.0 <= cfg.mix <= 1.0, "between 0 and 1"), ("ema", 0.0 <= cfg.ema < 1.0, "in [0, 1)"),
            ("every", cfg.every >= 1, "at least 1"), ("power", cfg.power >= 0.0, ">= 0"),
            ("temperature", cfg.temperature is None or cfg.temperature > 0, "> 0 or null"))
  for key, ok, expected in checks:
    if not ok:
      raise ConfigError(f"data.mining.{key}={getattr(cfg, key)}: must be {expected}")


def _encode(array: np.ndarray) -> str:
  return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _decode(text: str, dtype: Any) -> np.ndarray:
  return np.frombuffer(base64.b64decode(text), dtype=dtype).copy()


class MiningTable:
  """Host-side EMA of every example's loss, published in versions (see the module docstring)."""

  def __init__(self, num_examples: int, every: int, decay: float, wait_secs: float = 600.0):
    self.num_examples = num_examples
    self.every = max(1, int(every))
    self.decay = decay
    self.wait_secs = wait_secs
    self._cond = threading.Condition()
    self.reset()

  def reset(self) -> None:
    """The state of a fresh run: version 0, no losses seen."""
    with self._cond:
      self.version = 0
      self._emas = {0: np.full(self.num_examples, np.nan)}
      self._pending: list[tuple[int, Any, Any]] = []  # (batch index, ids, losses), maybe still on device
      self._closed = False
      self._cond.notify_all()

  def version_for_batch(self, batch: int) -> int:
    return max(batch // self.every - 1, 0)

  def ema(self, version: int) -> np.ndarray:
    """The per-example loss EMA of `version` (NaN: never seen), waiting until it is published."""
    with self._cond:
      if self.version < version and threading.current_thread() is threading.main_thread():
        # Read inline by the loop itself: nothing could publish it while we wait.
        raise RuntimeError(f"batch needs mining table version {version} but the table is at {self.version}; "
                           "its restored state does not match the iterator's position")
      if not self._cond.wait_for(lambda: self.version >= version or self._closed, timeout=self.wait_secs):
        raise TimeoutError(f"mining table version {version} was not published within {self.wait_secs} s")
      if version == 0:  # never folded: also what batch 0 (compiled from at every start) reads
        return np.full(self.num_examples, np.nan)
      if version not in self._emas:
        raise RuntimeError(f"mining table version {version} is gone (now at {self.version}); "
                           "the pipeline read further behind the loop than allowed")
      return self._emas[version]

  def record(self, batch: int, ids: Any, losses: Any) -> None:
    """Keeps batch `batch`'s ids and losses (device arrays are read only when folded in or saved)."""
    with self._cond:
      self._pending.append((batch, ids, losses))

  def publish(self, step: int) -> None:
    """At step v*R: makes version v from the losses of batches < (v-1)*R."""
    version = step // self.every
    if step % self.every or version <= self.version:
      return
    with self._cond:
      horizon = (version - 1) * self.every
      ready = [entry for entry in self._pending if entry[0] < horizon]
      self._pending = [entry for entry in self._pending if entry[0] >= horizon]
      ema = self._emas[self.version].copy()
      for _, ids, losses in sorted(ready, key=lambda entry: entry[0]):
        ids, losses = np.asarray(ids, np.int64), np.asarray(losses, np.float64)
        old = ema[ids]
        ema[ids] = np.where(np.isnan(old), losses, self.decay * old + (1.0 - self.decay) * losses)
      self._emas = {self.version: self._emas[self.version], version: ema}
      self.version = version
      self._cond.notify_all()

  def get_state(self) -> dict[str, Any]:
    """JSON-ready state (base64 arrays: exact and compact); reads pending losses off the devices."""
    with self._cond:
      pending = [[int(b), _encode(np.asarray(i, np.int64)), _encode(np.asarray(l, np.float32))]
                 for b, i, l in self._pending]
      return {"version": self.version, "pending": pending,
              "emas": {str(v): _encode(e) for v, e in self._emas.items()}}

  def set_state(self, state: dict[str, Any]) -> None:
    with self._cond:
      self.version = int(state["version"])
      self._emas = {int(v): _decode(e, np.float64) for v, e in state["emas"].items()}
      self._pending = [(int(b), _decode(i, np.int64), _decode(l, np.float32)) for b, i, l in state["pending"]]
      self._closed = False
      self._cond.notify_all()

  def close(self) -> None:
    """Releases pipeline threads waiting for a version that will not come."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()


def hard_probabilities(ema: np.ndarray, base: np.ndarray, mix: float, power: float,
                       temperature: float | None) -> np.ndarray:
  """(1 - mix) * base + mix * loss-proportional, over one dataset's examples.

  Loss-proportional is ema^power, or softmax(ema / temperature) when a
  temperature is set; examples never seen count as the mean seen loss.
  """
  base = base / base.sum()
  seen = np.isfinite(ema)
  if not seen.any() or mix <= 0:
    return base
  loss = np.maximum(np.where(seen, ema, ema[seen].mean()), 0.0)
  if temperature:
    score = np.exp((loss - loss.max()) / temperature)
  else:
    score = loss ** power
  if not score.sum() > 0:
    return base
  return (1.0 - mix) * base + mix * score / score.sum()


class MinedStream:
  """One dataset's examples drawn with replacement by mined probabilities; batch i's
  draws come from rng(seed, i) and the table version that batch i may use."""

  def __init__(self, table: MiningTable, offset: int, base: np.ndarray, seed: Sequence[int], mix: float,
               power: float, temperature: float | None):
    self.table, self.offset, self.base, self.seed = table, offset, base, tuple(seed)
    self.mix, self.power, self.temperature = mix, power, temperature
    self._cdfs: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def cdf(self, version: int) -> np.ndarray:
    with self._lock:
      if version not in self._cdfs:
        ema = self.table.ema(version)[self.offset:self.offset + len(self.base)]
        probs = hard_probabilities(ema, self.base, self.mix, self.power, self.temperature)
        self._cdfs = {v: c for v, c in self._cdfs.items() if v >= version - 1}
        self._cdfs[version] = np.cumsum(probs)
      return self._cdfs[version]

  def take(self, batch_index: int, start: int, count: int) -> np.ndarray:
    del start
    cdf = self.cdf(self.table.version_for_batch(batch_index))
    return inverse_cdf_draw(cdf, np.random.default_rng([*self.seed, batch_index]), count)


class MiningStateIterDataset(grain.IterDataset):
  """Passes elements through; its iterator's state adds the mining table's to the pipeline's."""

  def __init__(self, parent: grain.IterDataset, table: MiningTable):
    super().__init__(parent)
    self.table = table

  def __iter__(self) -> grain.DatasetIterator:
    return _MiningStateIterator(self._parent.__iter__(), self.table)


class _MiningStateIterator(grain.DatasetIterator):

  def __init__(self, parent: grain.DatasetIterator, table: MiningTable):
    super().__init__(parent)
    self._table = table
    table.reset()  # a fresh iterator starts at batch 0, before any loss was seen

  def __next__(self) -> Any:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return {"pipeline": self._parent.get_state(), "mining": self._table.get_state()}

  def set_state(self, state: dict[str, Any]) -> None:
    if "mining" not in state:
      raise IncompatibleCheckpoint("the checkpoint's data iterator was saved without data.mining; resume it with "
                        "data.mining.enabled=false, or start a new run.dir")
    # The table first: the restored pipeline at once reads batches that need its versions.
    self._table.set_state(state["mining"])
    self._parent.set_state(state["pipeline"])

  def close(self) -> None:
    self._table.close()
    super().close()
