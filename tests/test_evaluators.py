"""Evaluators: recall@K against hand-computed values, exact padded means, per-dataset reconstruction
error, the registry's one-line errors, and when each evaluator runs in the loop."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtrain
from jaxtrain.actions.base import Bookkeeping, LoopContext
from jaxtrain.actions.evaluation import Evaluate, Scheduled, schedule_evaluators
from jaxtrain.config.schema import DataConfig
from jaxtrain.core import mesh as mesh_lib
from jaxtrain.core.state import TrainState
from jaxtrain.core.step import weighted_mean
from jaxtrain.data import pipeline
from jaxtrain.errors import ConfigError
from jaxtrain.evaluators.base import EvalContext, EvaluatorConfig, build_evaluators, run_evaluators
from jaxtrain.evaluators.retrieval import recall_at_k
from jaxtrain.tasks.base import Task
from jaxtrain.track.events import EventWriter
from jaxtrain.track.scalars import ScalarWriter

# Five points on a line, labels 0 1 0 1 1. Nearest other point of each: 0->1, 1->0, 3->1, 10->11.5, 11.5->10,
# so recall@1 = 2/5 (only the last two find their label); the two nearest add 3 for 0 and 0 for 3: recall@2 = 4/5.
POSITIONS = np.array([0.0, 1.0, 3.0, 10.0, 11.5])
LABELS = np.array([0, 1, 0, 1, 1])


def test_recall_at_k_euclidean_by_hand():
  embeddings = np.stack([POSITIONS, np.zeros(5)], axis=1)
  assert recall_at_k(embeddings, LABELS, [1, 2], "euclidean") == {1: 0.4, 2: 0.8}
  # Every other point is within 4 neighbours: each query finds its label.
  assert recall_at_k(embeddings, LABELS, [4], "euclidean") == {4: 1.0}


def test_recall_at_k_cosine_ignores_norms():
  angles = np.deg2rad(POSITIONS * 10)  # the same neighbour order, as directions
  embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [1], [1], [1], [5]])
  assert recall_at_k(embeddings, LABELS, [1, 2], "cosine") == {1: 0.4, 2: 0.8}


def test_recall_never_counts_the_query_itself():
  # Two examples share one embedding but not a label; a third is far away with a label of its own.
  embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  assert recall_at_k(embeddings, np.array([0, 1, 2]), [1, 2], "euclidean") == {1: 0.0, 2: 0.0}


@dataclasses.dataclass
class _ScaleConfig:
  name: str = "scale"


class _Scale(Task):
  """Reconstructs x as scale * x; its loss is that reconstruction's MSE. No `embed` view."""

  config_class = _ScaleConfig

  def init(self, rng):
    return {"scale": jnp.asarray(0.5)}, {}

  def loss(self, params, model_state, batch, rng, train):
    error = jnp.square(params["scale"] * batch["x"] - batch["x"]).mean(axis=1)
    mse = weighted_mean(error, batch)
    return mse, ({"mse": mse}, model_state)

  def reconstruct(self, params, model_state, batch, rng):
    return params["scale"] * batch["x"]


@pytest.fixture(scope="module")
def scale_setup():
  """13 examples from 3 datasets in padded batches of 8 (the last has 3 padding rows) on 8 devices."""
  rng = np.random.default_rng(0)
  arrays = {"x": rng.normal(size=(13, 4)).astype(np.float32),
            "dataset": np.array([0, 1, 2, 0, 0, 1, 2, 2, 2, 0, 1, 1, 0], np.int32),
            "label": np.arange(13, dtype=np.int32) % 3}
  mesh = mesh_lib.make_mesh(-1, 1)
  host_batches = pipeline.eval_dataset(arrays, DataConfig(eval_batch_size=8), multiple_of=8)
  assert len(host_batches) == 2 and host_batches[1]["weight"].sum() == 5
  task = _Scale(_ScaleConfig(), host_batches[0])
  params, _ = task.init(None)
  state = TrainState.create(params=params, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0))
  shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
  context = EvalContext(task, mesh, shardings, jax.eval_shape(lambda: state), host_batches,
                        pipeline.global_batch_putter(mesh_lib.batch_sharding(mesh)), cache_on_device=True)
  per_example = 0.25 * np.square(arrays["x"].astype(np.float64)).mean(axis=1)
  return context, jax.device_put(state, shardings), arrays, per_example


def test_metrics_and_reconstruction_exact_over_padded_batches(scale_setup):
  context, state, arrays, per_example = scale_setup
  evaluators, names = build_evaluators([{"name": "metrics"}, {"name": "reconstruction"}], context)
  assert names == ["loss", "mse", "recon_mse", "recon_mse/0", "recon_mse/1", "recon_mse/2"]
  results = run_evaluators(evaluators, state, context)
  expected = {"loss": per_example.mean(), "mse": per_example.mean(), "recon_mse": per_example.mean()}
  for dataset in range(3):
    expected[f"recon_mse/{dataset}"] = per_example[arrays["dataset"] == dataset].mean()
  assert results.keys() == expected.keys()
  for name, value in expected.items():
    assert math.isclose(results[name], value, rel_tol=1e-6), name


def test_evaluator_errors_are_one_line(scale_setup):
  context = scale_setup[0]
  with pytest.raises(ConfigError, match=r"recall_at_k needs a task with the `embed` view") as err:
    build_evaluators([{"name": "recall_at_k"}], context)
  assert "\n" not in str(err.value)
  with pytest.raises(ConfigError, match=r"metric 'loss' comes from both metrics and metrics"):
    build_evaluators([{"name": "metrics"}, {"name": "metrics"}], context)
  with pytest.raises(ConfigError, match=r"eval.evaluators\[1\].name='recal'.*recall_at_k"):
    jaxtrain.compose(["eval.evaluators=[{name:metrics},{name:recal}]"])
  with pytest.raises(ConfigError, match=r"eval.evaluators\[0\].kk.*keys: name, every, at_end, k"):
    jaxtrain.compose(["eval.evaluators=[{name:recall_at_k,kk:3}]"])


class _Named:
  """An evaluator stand-in: a name, a schedule config and declared metrics."""

  def __init__(self, name, every=None, at_end=True, metrics=()):
    self.name = name
    self.config = EvaluatorConfig(name=name, every=every, at_end=at_end)
    self.declared_metrics = tuple(metrics)


def test_schedule_adds_checkpoint_steps_only_for_the_monitored_evaluator():
  metrics = _Named("metrics", metrics=["loss"])
  recall = _Named("recall_at_k", every=0, metrics=["recall@1"])
  often = _Named("often", every=7, at_end=False, metrics=["x"])
  plain = schedule_evaluators([metrics, recall, often], eval_every=20, monitored=["loss"], checkpoint_every=50)
  assert [s.every_steps for s in plain] == [(20, 50), (), (7,)]
  by_recall = schedule_evaluators([metrics, recall], eval_every=20, monitored=["recall@1"], checkpoint_every=50)
  assert [s.every_steps for s in by_recall] == [(20,), (50,)]


def test_evaluate_action_runs_due_evaluators_and_merges_the_final_round(tmp_path):
  calls = []

  def eval_fn(state, evaluators):
    calls.append((state, [e.name for e in evaluators]))
    return {f"{e.name}_value": float(state) for e in evaluators}

  schedule = [Scheduled(_Named("a"), (2,), True), Scheduled(_Named("b"), (3,), False),
              Scheduled(_Named("end"), (), True)]
  scalars = ScalarWriter(tmp_path / "s.csv", ["step", "epoch", "split", "a_value", "b_value", "end_value"])
  action = Evaluate(eval_fn, schedule, EventWriter(tmp_path / "e.jsonl"), scalars)
  book = Bookkeeping()
  ctx = LoopContext(step=0, total_steps=6, steps_per_epoch=1, state=0, train_metrics=None, data_iterator=None,
                    book=book)
  for step in range(1, 7):
    ctx.step = ctx.state = step
    action(ctx)
  assert calls == [(2, ["a"]), (3, ["b"]), (4, ["a"]), (6, ["a"]), (6, ["b"])]
  assert book.last_eval == {"val/a_value": 6.0, "val/b_value": 6.0}
  ctx.final = True
  action(ctx)  # only the end-only evaluator is left for step 6; the rest are kept
  assert calls[-1] == (6, ["end"])
  assert book.last_eval == {"val/a_value": 6.0, "val/b_value": 6.0, "val/end_value": 6.0}
  assert book.last_eval_step == 6
  action(ctx)
  assert len(calls) == 6  # never twice for one step
