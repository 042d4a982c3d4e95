"""The lm task: byte windows from text files, the transformer's named params and
param counts, the step's FLOPs, throughput figures, and a tiny model that learns."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.config.schema import DataConfig
from jaxtrain.core.hardware import StepThroughput, peak_flops_per_device, total_peak_flops
from jaxtrain.core.precision import REMAT_POLICIES
from jaxtrain.data.sources import load_splits
from jaxtrain.data.text import text_windows, unigram_bits_per_byte
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.lm import LMConfig, LMTask

TINY = dict(d_model=64, n_layers=2, n_heads=4, d_ff=256)
VARIANT = dict(positions="learned", mlp="gelu", norm="layer", tie_embeddings=False)
SEQ_LEN = 32


def _task(seq_len: int = SEQ_LEN, **options) -> LMTask:
  return LMTask(LMConfig(**{**TINY, **options}), {"tokens": np.zeros((2, seq_len + 1), np.int32)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One short run on 8 devices: 2 layers, d_model 64, windows of 32 bytes, 40 steps."""
  run_dir = tmp_path_factory.mktemp("lm") / "run"
  overrides = ["task=lm", f"run.dir={run_dir}", "trainer.steps=40", "trainer.log_every=10", "trainer.eval_every=20",
               "checkpoint.every=40", "logging.progress=none", "data.seq_len=32", "data.max_bytes=150000",
               "data.val_fraction=0.05", "data.batch_size=32", "trainer.peak_tflops=1.0",
               *[f"task.{k}={v}" for k, v in TINY.items()]]
  return jaxtrain.run(jaxtrain.compose(overrides))


def test_tiny_lm_learns_and_reports_throughput(trained):
  with open(trained.run_dir / "facts" / "scalars.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  train = [r for r in rows if r["split"] == "train"]
  assert float(train[-1]["loss"]) < float(train[0]["loss"]) - 0.5
  assert trained.summary["final_metrics"]["val/bits_per_byte"] < 6.0  # 8 = a uniform guess
  np.testing.assert_allclose(trained.summary["final_metrics"]["val/bits_per_byte"],
                             trained.summary["final_metrics"]["val/loss"] / np.log(2), rtol=1e-5)
  # Every timed train row has tokens/s = steps/s x tokens per step, and MFU from trainer.peak_tflops x 8 devices.
  timed = [r for r in train if r["steps_per_sec"]]
  assert timed
  cost = trained.summary["step_tokens"], trained.summary["step_flops"]
  assert cost[0] == 32 * SEQ_LEN
  for row in timed:
    rate = float(row["steps_per_sec"])
    np.testing.assert_allclose(float(row["tokens_per_sec"]), rate * cost[0], rtol=1e-4)
    np.testing.assert_allclose(float(row["mfu"]), rate * cost[1] / (8 * 1e12), rtol=1e-4)
  rate = trained.summary["train_steps_per_sec"]
  np.testing.assert_allclose(trained.summary["train_tokens_per_sec"], rate * cost[0], rtol=2e-3)
  assert 0 < trained.summary["train_mfu"] < 1


def test_generate_greedy_and_sampled():
  task = _task()
  # All-zero params give uniform logits: greedy picks byte 0, sampling spreads over the bytes.
  params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(task.init, jax.random.PRNGKey(0))[0])
  assert task.generate(params, b"import os\nimport ", 8) == bytes(8)
  sampled = task.generate(params, b"import ", 8, temperature=1.0, rng=jax.random.PRNGKey(1))
  assert len(sampled) == 8 and sampled != bytes(8)


@pytest.mark.parametrize("options", [{}, VARIANT], ids=["rope-swiglu-rms-tied", "learned-gelu-layer-untied"])
def test_param_count_formula_and_logical_axes(options):
  task = _task(**options)
  params, _ = jax.eval_shape(task.init, jax.random.PRNGKey(0))  # shapes only: nothing to compute
  assert sum(x.size for x in jax.tree.leaves(params)) == task.num_params()["total"]
  axes = task.logical_axes()
  assert jax.tree.structure(axes) == jax.tree.structure(params)
  for name, param in zip(jax.tree.leaves(axes), jax.tree.leaves(params)):
    assert len(name) == param.ndim
  block = axes["block_0"]
  expected = {
      ("embed", "embedding"): ("vocab", "embed"),
      ("block_0", "attention", "query", "kernel"): ("embed", "heads", "kv"),
      ("block_0", "attention", "out", "kernel"): ("heads", "kv", "embed"),
      ("block_0", "mlp", "up", "kernel"): ("embed", "mlp"),
      ("block_0", "mlp", "down", "kernel"): ("mlp", "embed"),
      ("final_norm", "scale"): ("embed",),
  }
  if options:
    expected.update({("output", "kernel"): ("embed", "vocab"), ("positions",): ("seq", "embed"),
                     ("block_1", "mlp_norm", "bias"): ("embed",)})
  else:
    assert "gate" in block["mlp"] and "output" not in axes and "positions" not in axes
  for path, names in expected.items():
    node_axes, node_params = axes, params
    for key in path:
      node_axes, node_params = node_axes[key], node_params[key]
    assert tuple(node_axes) == names, path
  assert params["block_0"]["attention"]["query"]["kernel"].shape == (64, 4, 16)


def test_step_cost_matches_a_hand_count():
  # N = 2 layers x (4·64² attention + 3·64·256 SwiGLU + 2·64 norms) + 64 final norm + 64·256 logits = 147,776.
  per_token = 6 * 147_776 + 12 * 2 * 64 * SEQ_LEN
  assert _task().step_cost(32) == {"tokens": 32 * SEQ_LEN, "flops": per_token * 32 * SEQ_LEN}


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_each_block_is_rematerialised_under_the_policy(remat):
  task = _task()
  task.remat = remat
  params, _ = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  batch = {"tokens": jax.ShapeDtypeStruct((2, SEQ_LEN + 1), jnp.int32)}
  # Traced only: the gradient's program holds one checkpointed region per block, with the policy.
  jaxpr = jax.make_jaxpr(jax.grad(lambda p, b: task.loss(p, {}, b, None, True)[0]))(params, batch)
  policies = [eqn.params["policy"] for eqn in jaxpr.jaxpr.eqns if "policy" in eqn.params]
  assert policies == ([] if remat == "none" else [REMAT_POLICIES[remat]] * TINY["n_layers"])


def test_scanned_layers_stack_params_on_a_layers_axis():
  task = _task(scan_layers=True)
  task.remat = "full"
  params, _ = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  assert sum(x.size for x in jax.tree.leaves(params)) == task.num_params()["total"]
  axes = task.logical_axes()["blocks"]["block"]
  assert tuple(axes["attention"]["query"]["kernel"]) == ("layers", "embed", "heads", "kv")
  for names, param in zip(jax.tree.leaves(axes), jax.tree.leaves(params["blocks"]["block"])):
    assert names[0] == "layers" and param.shape[0] == TINY["n_layers"] and len(names) == param.ndim
  batch = {"tokens": jax.ShapeDtypeStruct((2, SEQ_LEN + 1), jnp.int32)}
  jaxpr = jax.make_jaxpr(jax.grad(lambda p, b: task.loss(p, {}, b, None, True)[0]))(params, batch)
  assert "scan" in {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}


def test_peak_flops_table_and_throughput():
  assert peak_flops_per_device("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
  assert peak_flops_per_device("NVIDIA H100 PCIe", "fp32") == pytest.approx(378e12)
  assert peak_flops_per_device("TPU v5 lite", "bf16") == pytest.approx(197e12)
  assert peak_flops_per_device("cpu") is None and total_peak_flops("cpu", 8) is None
  assert total_peak_flops("cpu", 8, peak_tflops=2.0) == pytest.approx(16e12)
  meter = StepThroughput({"tokens": 1000, "flops": 1e12}, peak_flops_total=4e12)
  assert meter.at(2.0) == {"tokens_per_sec": 2000.0, "mfu": 0.5}
  assert meter.at(None) == {} and StepThroughput({"tokens": 1, "flops": 1}).columns == ["tokens_per_sec"]


def test_text_windows_and_unigram_baseline(tmp_path):
  (tmp_path / "b.py").write_bytes(b"bbbbbbbbbb")
  (tmp_path / "a.py").write_bytes(b"aaaaaaaaaa")
  (tmp_path / "c.txt").write_bytes(b"ignored")
  tokens = text_windows(DataConfig(name="text", text_dir=str(tmp_path), seq_len=3, max_bytes=15))["tokens"]
  assert tokens.dtype == np.int32 and tokens.shape == (3, 4)  # 15 bytes in sorted file order, 3 windows
  assert bytes(tokens.ravel().astype(np.uint8)) == b"aaaaaaaaaabb"
  skewed = np.array([[0, 1, 1, 1]] * 4, np.int32)
  assert unigram_bits_per_byte(skewed, skewed) < unigram_bits_per_byte(skewed, np.full((1, 4), 7, np.int32))


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_text_source_errors_name_the_key(tmp_path, setup):
  text_dir = tmp_path / "corpus"
  if setup == "empty":
    text_dir.mkdir()
    (text_dir / "empty.py").write_bytes(b"")
  with pytest.raises(ConfigError, match=r"data\.text_dir=") as err:
    load_splits(DataConfig(name="text", text_dir=str(text_dir)))
  assert "\n" not in str(err.value)


def test_lm_needs_token_windows():
  with pytest.raises(ConfigError, match="data=text"):
    LMTask(LMConfig(), {"x": np.zeros((2, 64), np.float32)})
  with pytest.raises(ConfigError, match="task.n_heads"):
    _task(n_heads=5)
