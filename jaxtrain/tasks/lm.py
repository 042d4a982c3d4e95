"""Task `lm`: a decoder-only transformer predicting the next byte (data=text).

Loss: next-byte cross-entropy in nats per byte; metrics bits_per_byte (the
same loss in bits: 8 is a uniform guess over 256 bytes) and accuracy (argmax).
Throughput: `step_cost` gives the tokens and model FLOPs of one train step,
from which the logger reports tokens/s and MFU (see jaxtrain/core/hardware.py):

  FLOPs per step = 6·N·tokens + 12·n_layers·d_model·seq_len·tokens,  tokens = batch·seq_len

forward + backward (per param and token, one multiply-add forward: 2 FLOPs; two
backward: 4). N counts the params that multiply every token: the blocks, the final
norm and the d_model·vocab logits projection (tied or not), not the embedding or
position tables, which are lookups. The second term is attention's QKᵀ and AV,
counted in full (not halved for the causal mask, as in PaLM's MFU). Remat's
recomputation is not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.core.step import weighted_mean
from jaxtrain.errors import ConfigError
from jaxtrain.models.transformer import TransformerLM, TransformerShape, count_params, flop_params
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task


@dataclasses.dataclass
class LMConfig:
  name: str = "lm"
  # 256 byte values; a larger vocabulary only pads the embedding (e.g. to a multiple of a tensor axis).
  vocab_size: int = 256
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  d_ff: int = 256
  positions: str = "rope"  # rope | learned
  mlp: str = "swiglu"  # swiglu | gelu
  norm: str = "rms"  # rms | layer
  tie_embeddings: bool = True
  # jax.nn.dot_product_attention's implementation: auto (JAX decides) | xla | cudnn (flash; GPU, bf16).
  attention: str = "auto"
  # Scan one block over the layers (params stacked on a leading "layers" axis): compiles once per model, not per layer.
  scan_layers: bool = False


_CHOICES = {"positions": ("rope", "learned"), "mlp": ("swiglu", "gelu"), "norm": ("rms", "layer"),
            "attention": ("auto", "xla", "cudnn")}


def _shape(config: LMConfig, example_batch) -> TransformerShape:
  """The network's sizes from the task config and the data's window length; ConfigError if inconsistent."""
  if "tokens" not in example_batch:
    raise ConfigError(f"task=lm needs token windows (data=text); the data has keys {sorted(example_batch)}")
  for key, allowed in _CHOICES.items():
    if getattr(config, key) not in allowed:
      raise ConfigError(f"task.{key}={getattr(config, key)!r}: choose one of {', '.join(allowed)}")
  for key in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff"):
    if getattr(config, key) < 1:
      raise ConfigError(f"task.{key}={getattr(config, key)}: must be positive")
  if config.vocab_size < 256:
    raise ConfigError(f"task.vocab_size={config.vocab_size}: must cover the 256 byte values")
  if config.d_model % config.n_heads:
    raise ConfigError(f"task.d_model={config.d_model} must be divisible by task.n_heads={config.n_heads}")
  if config.positions == "rope" and (config.d_model // config.n_heads) % 2:
    raise ConfigError(f"task.positions=rope needs an even head size; d_model/n_heads = "
                      f"{config.d_model // config.n_heads}")
  seq_len = int(np.shape(example_batch["tokens"])[1]) - 1
  fields = {f.name for f in dataclasses.fields(TransformerShape)} - {"seq_len"}
  return TransformerShape(seq_len=seq_len, **{k: getattr(config, k) for k in fields})


@register_task("lm", store_config=False)  # options and sizes live in configs/task/lm.yaml
class LMTask(Task):
  """Next-byte prediction over batch["tokens"] [B, seq_len + 1]."""

  config_class = LMConfig
  remat_in_model = True  # each block is rematerialised on its own (TransformerLM.remat)

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    self.shape = _shape(config, example_batch)

  @property
  def model(self) -> TransformerLM:
    # Built on use: the engine sets `remat` after construction.
    return TransformerLM(self.shape, remat=self.remat)

  def _boxed_init(self, rng):
    return self.model.init(rng, jnp.zeros((1, self.shape.seq_len), jnp.int32))

  def init(self, rng):
    return nn.meta.unbox(self._boxed_init(rng)["params"]), {}

  def logical_axes(self):
    """PartitionSpecs of logical names, e.g. P("embed", "mlp"), one per param."""
    boxed = jax.eval_shape(self._boxed_init, jax.random.PRNGKey(0))
    return nn.get_partition_spec(boxed)["params"]

  def num_params(self) -> dict[str, int]:
    """Param counts by part (see transformer.count_params)."""
    return count_params(self.shape)

  def step_cost(self, global_batch_size):
    """Tokens and model FLOPs of one train step (forward + backward):
    6·N·tokens + 12·n_layers·d_model·seq_len·tokens, N = flop_params (non-embedding
    params plus the logits projection), attention counted in full (causal not halved)."""
    s = self.shape
    tokens = global_batch_size * s.seq_len
    per_token = 6 * flop_params(s) + 12 * s.n_layers * s.d_model * s.seq_len
    return {"tokens": tokens, "flops": per_token * tokens}

  def logits(self, params, tokens):
    """Float32 next-token logits [B, T, vocab] for tokens [B, T]."""
    return self.model.apply({"params": params}, tokens).astype(jnp.float32)

  def loss(self, params, model_state, batch, rng, train):
    del rng, train  # no dropout
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = self.logits(params, inputs)
    loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets), batch)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    metrics = {"bits_per_byte": loss / math.log(2), "accuracy": weighted_mean(correct, batch)}
    return loss, (metrics, model_state)

  def generate(self, params, prompt: bytes, num_bytes: int, temperature: float = 0.0,
               rng: jax.Array | None = None) -> bytes:
    """`num_bytes` bytes continuing `prompt` (greedy at temperature 0, else sampled).

    Each byte reruns the model over a fixed window (no cache): meant for a glance
    at what the model learned, not for speed.
    """
    window = self.shape.seq_len
    if not 0 < num_bytes < window:
      raise ValueError(f"num_bytes={num_bytes}: must be between 1 and seq_len-1={window - 1}")
    prompt = prompt[-(window - num_bytes):] or b"\n"
    buffer = np.zeros((1, window), np.int32)
    buffer[0, :len(prompt)] = np.frombuffer(prompt, np.uint8)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    out = _generate(self, params, jnp.asarray(buffer), len(prompt), num_bytes, jnp.float32(temperature), rng)
    return bytes(np.asarray(out[0, len(prompt):len(prompt) + num_bytes], np.uint8))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _generate(task, params, buffer, start, num_bytes, temperature, rng):
  def next_byte(i, carry):
    buffer, rng = carry
    rng, key = jax.random.split(rng)
    # Causal attention: the zeros after position i do not change its logits.
    logits = task.logits(params, buffer)[0, i - 1, :256]
    # A traced temperature: greedy and sampled generation share one compiled loop.
    sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
    token = jnp.where(temperature > 0, sampled, jnp.argmax(logits))
    return buffer.at[0, i].set(token.astype(buffer.dtype)), rng

  buffer, _ = jax.lax.fori_loop(start, start + num_bytes, next_byte, (buffer, rng))
  return buffer
