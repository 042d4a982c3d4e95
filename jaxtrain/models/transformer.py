"""Decoder-only transformer (GPT-style, pre-norm) with logically named params.

Every param carries logical axis names (`nn.with_logical_partitioning`) that the
engine's sharding rules map to mesh axes:

  token embedding ("vocab", "embed") · q/k/v kernels ("embed", "heads", "kv") ·
  attention out ("heads", "kv", "embed") · MLP in ("embed", "mlp") · MLP out
  ("mlp", "embed") · norm scales and biases ("embed",) · untied output
  ("embed", "vocab") · learned positions ("seq", "embed").

No module fixes a dtype: compute follows the params and inputs, so params cast
to bfloat16 by the engine compute in bfloat16 (the caller takes the logits to
float32 for the loss). Attention goes through `jax.nn.dot_product_attention`;
`attention="auto"` leaves the choice to JAX (today its XLA path on every backend),
"cudnn" asks for cuDNN's fused flash attention (NVIDIA GPUs, bf16/fp16 compute).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.core.precision import REMAT_POLICIES


@dataclasses.dataclass(frozen=True)
class TransformerShape:
  """Sizes and variants of the network (hashable: it is a module attribute)."""

  vocab_size: int = 256
  seq_len: int = 128
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  d_ff: int = 256
  positions: str = "rope"  # rope | learned
  mlp: str = "swiglu"  # swiglu | gelu
  norm: str = "rms"  # rms | layer
  tie_embeddings: bool = True
  attention: str = "auto"  # auto | xla | cudnn: jax.nn.dot_product_attention's implementation
  # One block applied n_layers times by nn.scan (params stacked on a leading "layers" axis):
  # one block to compile instead of n_layers.
  scan_layers: bool = False

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads


def count_params(shape: TransformerShape) -> dict[str, int]:
  """Param counts by part: `embedding` (token table and learned positions),
  `blocks`, `final_norm`, `output` (untied head; 0 when tied) and `total`."""
  d, f = shape.d_model, shape.d_ff
  norm = d if shape.norm == "rms" else 2 * d  # LayerNorm also has a bias
  attention = 4 * d * d  # q, k, v and out, no biases
  mlp = (3 if shape.mlp == "swiglu" else 2) * d * f
  counts = {
      "embedding": shape.vocab_size * d + (shape.seq_len * d if shape.positions == "learned" else 0),
      "blocks": shape.n_layers * (attention + mlp + 2 * norm),
      "final_norm": norm,
      "output": 0 if shape.tie_embeddings else d * shape.vocab_size,
  }
  counts["total"] = sum(counts.values())
  return counts


def flop_params(shape: TransformerShape) -> int:
  """N in the 6·N·tokens rule: params that multiply every token, i.e. all but
  the lookup tables (token embedding, learned positions), plus the logits
  projection d_model·vocab whether or not it shares the embedding's table."""
  counts = count_params(shape)
  return counts["blocks"] + counts["final_norm"] + shape.d_model * shape.vocab_size


def _named(init, *names: str):
  return nn.with_logical_partitioning(init, names)


def rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding of x [B, T, H, D] (D even), rotating pairs (i, i + D/2)."""
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[:, None].astype(jnp.float32) * freqs[None, :]  # [T, half]
  sin, cos = jnp.sin(angles)[:, None, :], jnp.cos(angles)[:, None, :]  # broadcast over heads
  first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
  return rotated.astype(x.dtype)


def _norm(shape: TransformerShape, name: str) -> nn.Module:
  if shape.norm == "rms":
    return nn.RMSNorm(scale_init=_named(nn.initializers.ones, "embed"), name=name)
  return nn.LayerNorm(scale_init=_named(nn.initializers.ones, "embed"),
                      bias_init=_named(nn.initializers.zeros, "embed"), name=name)


class Attention(nn.Module):
  """Causal multi-head self-attention."""

  shape: TransformerShape

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.shape
    init = nn.initializers.lecun_normal()

    def project(name: str) -> jax.Array:
      return nn.DenseGeneral((s.n_heads, s.head_dim), use_bias=False, name=name,
                             kernel_init=_named(init, "embed", "heads", "kv"))(x)

    q, k, v = project("query"), project("key"), project("value")
    if s.positions == "rope":
      positions = jnp.arange(x.shape[1])
      q, k = rope(q, positions), rope(k, positions)
    implementation = None if s.attention == "auto" else s.attention
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
    return nn.DenseGeneral(s.d_model, axis=(-2, -1), use_bias=False, name="out",
                           kernel_init=_named(init, "heads", "kv", "embed"))(out)


class Mlp(nn.Module):
  """SwiGLU (gate · up → down) or GELU (up → down) feed-forward."""

  shape: TransformerShape

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.shape
    init = nn.initializers.lecun_normal()
    up = nn.Dense(s.d_ff, use_bias=False, name="up", kernel_init=_named(init, "embed", "mlp"))(x)
    if s.mlp == "swiglu":
      gate = nn.Dense(s.d_ff, use_bias=False, name="gate", kernel_init=_named(init, "embed", "mlp"))(x)
      hidden = nn.silu(gate) * up
    else:
      hidden = nn.gelu(up)
    return nn.Dense(s.d_model, use_bias=False, name="down", kernel_init=_named(init, "mlp", "embed"))(hidden)


class Block(nn.Module):
  """x + attention(norm(x)), then x + mlp(norm(x))."""

  shape: TransformerShape

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + Attention(self.shape, name="attention")(_norm(self.shape, "attention_norm")(x))
    return x + Mlp(self.shape, name="mlp")(_norm(self.shape, "mlp_norm")(x))


class ScannedBlock(nn.Module):
  """A Block in nn.scan's (carry, input) -> (carry, output) form."""

  shape: TransformerShape

  @nn.compact
  def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
    return Block(self.shape, name="block")(x), None


class TransformerLM(nn.Module):
  """tokens [B, T] int -> logits [B, T, vocab] for the next token at every position.

  `remat` (none | full | dots) recomputes each block in the backward pass
  under that checkpoint policy, trading compute for activation memory.
  """

  shape: TransformerShape
  remat: str = "none"

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    s = self.shape
    embed = nn.Embed(s.vocab_size, s.d_model, name="embed",
                     embedding_init=_named(nn.initializers.normal(0.02), "vocab", "embed"))
    x = embed(tokens)
    if s.positions == "learned":
      table = self.param("positions", _named(nn.initializers.normal(0.02), "seq", "embed"), (s.seq_len, s.d_model))
      x = x + table[:tokens.shape[1]].astype(x.dtype)
    policy = REMAT_POLICIES[self.remat]  # model.remat; None = keep every activation
    if s.scan_layers:
      # prevent_cse=False: inside scan the CSE barriers are unnecessary and slow (flax's advice).
      block = ScannedBlock if policy is None else nn.remat(ScannedBlock, policy=policy, prevent_cse=False)
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=s.n_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(s, name="blocks")(x, None)
    else:
      block = Block if policy is None else nn.remat(Block, policy=policy)
      for layer in range(s.n_layers):
        x = block(s, name=f"block_{layer}")(x)
    x = _norm(s, "final_norm")(x)
    if s.tie_embeddings:
      return embed.attend(x)
    return nn.DenseGeneral(s.vocab_size, use_bias=False, name="output",
                           kernel_init=_named(nn.initializers.lecun_normal(), "embed", "vocab"))(x)
