"""Model components: output shapes, the VQ's gradients, metrics and dead-code restart, the kNN graph,
and the one-line errors for data that does not fit a component."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrain
from jaxtrain.errors import ConfigError
from jaxtrain.models import registry
from jaxtrain.models.gnn import knn_graph
from jaxtrain.models.latents import VectorQuantizer

B, D = 4, 8
LAYOUTS = {"flat": (64,), "image": (8, 8, 1), "points": (64, 3)}
# Every encoder/decoder and the layouts it accepts.
FITS = {"mlp": ("flat", "image", "points"), "conv": ("image",), "gnn": ("points",)}


def _component(kind, name, shape, **options):
  cfg = registry._COMPONENTS[kind][name].config_class(name=name, **options)
  return registry.build_component(kind, cfg, registry.Shapes(shape, D, shape))


def _mask(num_points=64):
  return (jnp.arange(num_points)[None, :] < jnp.array([[10], [30], [64], [1]])).astype(jnp.float32)


@pytest.mark.parametrize("name,layout", [(n, layout) for n, layouts in FITS.items() for layout in layouts])
def test_encoder_and_decoder_shapes(name, layout):
  shape = LAYOUTS[layout]
  x = jax.random.uniform(jax.random.PRNGKey(0), (B,) + shape)
  kwargs = {"mask": _mask()} if layout == "points" else {}
  encoder = _component("encoder", name, shape)
  decoder = _component("decoder", name, shape)

  def encode_decode(rng):
    h, _ = encoder.init_with_output(rng, x, False, **kwargs)
    out, _ = decoder.init_with_output(rng, h, False)
    return h, out

  h, out = jax.eval_shape(encode_decode, jax.random.PRNGKey(1))  # shapes only: tracing is enough
  chex.assert_shape(h, (B, D))
  chex.assert_shape(out, (B,) + shape)


@pytest.mark.parametrize("name", ["none", "linear", "vq"])
def test_latent_shapes(name):
  h = jax.random.normal(jax.random.PRNGKey(0), (B, D))
  latent = _component("latent", name, (64,))
  (z, aux, metrics), _ = jax.eval_shape(lambda rng: latent.init_with_output(rng, h, jnp.ones(B), False),
                                         jax.random.PRNGKey(1))
  chex.assert_shape(z, (B, D))
  chex.assert_shape(aux, (B,))
  for value in metrics.values():
    chex.assert_shape(value, ())


@pytest.mark.parametrize("kind,name,layout", [("encoder", "conv", "flat"), ("encoder", "gnn", "image"),
                                              ("decoder", "conv", "points"), ("decoder", "gnn", "flat")])
def test_component_rejects_other_layouts(kind, name, layout):
  with pytest.raises(ConfigError, match=rf"^model/{kind}={name}: .*rank.*data=digits_"):
    _component(kind, name, LAYOUTS[layout])


def test_conv_encoder_on_flat_data_is_a_one_line_config_error(tmp_path):
  cfg = jaxtrain.compose(["model/encoder=conv", f"run.dir={tmp_path / 'run'}", "trainer.steps=2",
                          "logging.progress=none"])
  with pytest.raises(ConfigError) as err:
    jaxtrain.run(cfg)
  message = str(err.value)
  assert "\n" not in message
  assert message.startswith("model/encoder=conv: expects rank-3 images [H, W, C]")
  assert "[64] (rank 1)" in message and "data=digits_images" in message


def test_unknown_latent_lists_the_choices():
  with pytest.raises(ConfigError, match="model/latent=foo.*linear, none, vq"):
    jaxtrain.compose(["model/latent=foo"])


# ---------------------------------------------------------------------------- VQ


def _vq(**options):
  return VectorQuantizer(num_codes=6, dim=D, **options)


def test_vq_straight_through_and_loss_gradients():
  vq = _vq(beta=0.25, restart_dead_codes=False)
  h = jax.random.normal(jax.random.PRNGKey(0), (B, D))
  params = vq.init(jax.random.PRNGKey(1), h, jnp.ones(B))["params"]
  codebook = params["codebook"]
  apply = jax.jit(lambda p, h_: vq.apply({"params": p}, h_, jnp.ones(B)))
  z, aux, _ = apply(params, h)
  index = jnp.argmin(jnp.sum(jnp.square(h[:, None] - codebook[None]), -1), axis=1)
  q = codebook[index]
  chex.assert_trees_all_close(z, q, atol=1e-6)  # the forward value is the nearest code

  # Straight-through: d(sum z * c)/dh = c, as if z were h.
  c = jax.random.normal(jax.random.PRNGKey(2), (B, D))
  grad_h = jax.jit(jax.grad(lambda h_: jnp.sum(apply(params, h_)[0] * c)))(h)
  chex.assert_trees_all_close(grad_h, c, atol=1e-6)

  # Aux loss: the codebook term moves only the codes, the commitment term only the encoder output.
  grad_p, grad_h = jax.jit(jax.grad(lambda p, h_: jnp.sum(apply(p, h_)[1]), argnums=(0, 1)))(params, h)
  chex.assert_trees_all_close(grad_h, 0.25 * 2.0 / D * (h - q), atol=1e-6)
  expected_codes = jnp.zeros_like(codebook).at[index].add(2.0 / D * (q - h))
  chex.assert_trees_all_close(grad_p["codebook"], expected_codes, atol=1e-6)
  chex.assert_trees_all_close(aux, 1.25 * jnp.mean(jnp.square(h - q), -1), atol=1e-6)


def test_vq_metrics_are_weighted():
  vq = _vq(restart_dead_codes=False)
  params = vq.init(jax.random.PRNGKey(1), jnp.zeros((B, D)), jnp.ones(B))["params"]
  codes = params["codebook"]
  # Codes 0, 0, 1 for the real examples; code 2 only for a padding row (weight 0).
  h = codes[jnp.array([0, 0, 1, 2])]
  _, _, metrics = vq.apply({"params": params}, h, jnp.array([1.0, 1.0, 1.0, 0.0]))
  share = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(metrics["perplexity"], np.exp(-np.sum(share * np.log(share))), rtol=1e-5)
  np.testing.assert_allclose(metrics["codebook_usage"], 2 / 6, rtol=1e-6)


def test_vq_dead_code_restart_is_deterministic_and_stateful():
  vq = _vq(restart_dead_codes=True, usage_decay=0.5, dead_usage=0.1)
  h = jax.random.normal(jax.random.PRNGKey(0), (B, D))
  weight = jnp.array([1.0, 1.0, 1.0, 0.0])
  variables = vq.init(jax.random.PRNGKey(1), h, weight)
  assert set(variables) == {"params", "vq_state"}
  codebook = variables["params"]["codebook"]
  train_apply = jax.jit(lambda state, h_: vq.apply({"params": variables["params"], **state}, h_, weight, True,
                                                   mutable=["vq_state"]))

  def codes(state):
    return codebook + state["vq_state"]["offset"]

  def used_codes(h_, state):
    return np.unique(np.asarray(jnp.argmin(jnp.sum(jnp.square(h_[:3, None] - codes(state)[None]), -1), axis=1)))

  # First step: every share starts at 0, so every code the real examples do not use moves onto one of
  # them (never onto the padding row); the used ones stay.
  (_, _, metrics), state = train_apply({"vq_state": variables["vq_state"]}, h)
  chex.assert_trees_all_equal(state, train_apply({"vq_state": variables["vq_state"]}, h)[1])  # deterministic
  used = used_codes(h, variables)
  dead = np.setdiff1d(np.arange(6), used)
  assert float(metrics["restarted_codes"]) == len(dead) > 0
  chex.assert_trees_all_close(codes(state)[used], codebook[used])
  distance_to_real = jnp.min(jnp.max(jnp.abs(codes(state)[dead, None] - h[None, :3]), axis=-1), axis=1)
  np.testing.assert_allclose(distance_to_real, 0.0, atol=1e-6)

  # Second step on other inputs: restarted codes start again at share 1/6, used ones had more; a code
  # unused this step halves its share and restarts if that is below 0.1; used ones stay where they are.
  h2 = jax.random.normal(jax.random.PRNGKey(2), (B, D))
  (_, _, metrics), state2 = train_apply(state, h2)
  used = used_codes(h2, state)
  share = np.isin(np.arange(6), used) * 1.0  # only whether it is zero matters below
  expected_dead = (0.5 * np.asarray(state["vq_state"]["usage"]) + 0.5 * share / 3) < 0.1
  assert float(metrics["restarted_codes"]) == expected_dead.sum() > 0
  chex.assert_trees_all_close(codes(state2)[used], codes(state)[used])
  # Evaluation (state not mutable) neither restarts nor reports restarts.
  _, _, eval_metrics = vq.apply({"params": variables["params"], **state2}, h, weight, False)
  assert "restarted_codes" not in eval_metrics


# ---------------------------------------------------------------------------- kNN graph


def test_knn_graph_honours_the_mask():
  coords = jax.random.uniform(jax.random.PRNGKey(0), (4, 64, 2))
  mask = _mask()
  adjacency = np.asarray(knn_graph(coords, mask, k=8))
  chex.assert_shape(adjacency, (4, 64, 64))
  c, mask = np.asarray(coords), np.asarray(mask)
  for b in range(4):
    real = np.flatnonzero(mask[b])
    assert (adjacency[b][:, mask[b] == 0] == 0).all()  # padding points are nobody's neighbour
    # Random coordinates have no ties: exactly the k (or all) nearest real points, itself included.
    for i in range(64):
      d = np.sum((c[b, real] - c[b, i]) ** 2, axis=1)
      expected = set(real[np.argsort(d)[:min(8, len(real))]])
      assert set(np.flatnonzero(adjacency[b, i])) == expected, (b, i)


def test_knn_graph_keeps_ties_at_the_kth_distance():
  grid = np.stack(np.divmod(np.arange(9), 3), axis=1).astype(np.float32)[None]  # a 3x3 grid
  adjacency = np.asarray(knn_graph(jnp.asarray(grid), None, k=2))
  assert adjacency[0, 4].sum() == 5  # the centre, and its 4 neighbours all at distance 1
  assert adjacency[0, 0].sum() == 3  # a corner, and its 2 neighbours at distance 1


def test_gnn_encoder_ignores_padding_points():
  encoder = _component("encoder", "gnn", (64, 3))
  x = jax.random.uniform(jax.random.PRNGKey(0), (B, 64, 3))
  mask = _mask()
  params = jax.jit(lambda rng: encoder.init(rng, x, False, mask=mask))(jax.random.PRNGKey(1))
  noise = jax.random.uniform(jax.random.PRNGKey(2), x.shape) * (1.0 - mask)[..., None]
  encode = jax.jit(lambda x_: encoder.apply(params, x_, False, mask=mask))
  chex.assert_trees_all_close(encode(x), encode(x + noise), atol=1e-5)
