"""Same config + same seed + same device count => bitwise the same params fingerprint."""

import jax
import numpy as np

import jaxtrain
from jaxtrain.track.summary import params_fingerprint

from _helpers import read_summary, reference_overrides


def test_same_seed_same_fingerprint_other_seed_differs(reference_run, tmp_path):
  first = reference_run.result
  second = jaxtrain.run(jaxtrain.compose(reference_overrides(tmp_path / "again")))
  other_seed = jaxtrain.run(jaxtrain.compose(reference_overrides(tmp_path / "seed1") + ["trainer.seed=1"]))

  fingerprints = [read_summary(r.run_dir)["params_fingerprint"] for r in (first, second, other_seed)]
  assert all(len(f) == 64 for f in fingerprints)
  assert second.run_dir != first.run_dir
  assert fingerprints[0] == fingerprints[1]
  assert fingerprints[2] != fingerprints[0]
  # The summary's fingerprint is that of the returned params, and equal
  # fingerprints really mean equal params (bitwise).
  assert second.params_fingerprint == fingerprints[1] == params_fingerprint(second.state.params)
  for a, b in zip(jax.tree.leaves(jax.device_get(first.state.params)),
                  jax.tree.leaves(jax.device_get(second.state.params))):
    np.testing.assert_array_equal(a, b)
  assert read_summary(first.run_dir)["final_metrics"] == read_summary(second.run_dir)["final_metrics"]


def test_fingerprint_sees_every_bit():
  params = {"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float32)}
  base = params_fingerprint(params)
  assert base == params_fingerprint({k: v.copy() for k, v in params.items()})
  tweaked = dict(params, b=np.nextafter(params["b"], 2, dtype=np.float32))
  assert params_fingerprint(tweaked) != base
  assert params_fingerprint({"a": params["a"].reshape(3, 2), "b": params["b"]}) != base  # shape counts
  assert params_fingerprint({"c": params["a"], "b": params["b"]}) != base  # names count
