"""Task `multidataset`: a shared core with one readout head per recording session.

The core (convolutions over the stimulus) is shared by every dataset; each dataset has
its own factorised readout (a spatial mask and feature weights per neuron, Klindt et al.
2017) predicting that session's neurons through a softplus.

Heads are stacked: params hold [num_datasets, max_neurons, ...] arrays and each example
picks its dataset's slice with batch["dataset"]. Sessions with fewer neurons pad their
responses to max_neurons and mark the real ones in batch["neuron_mask"], so every batch,
whichever dataset it comes from, has one shape and the train step compiles once (a
per-dataset head of its own size would compile once per neuron count). The padded
neurons' weights see no data, only the regularisers.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from jaxtrain.core.step import weighted_mean
from jaxtrain.data import recordings
from jaxtrain.errors import ConfigError
from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import register_task

LOSSES = ("poisson", "mse")
# A discrete Laplacian: large where a spatial readout mask is rough.
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


if not OmegaConf.has_resolver("jaxtrain_recordings"):
  # ${jaxtrain_recordings:<root>,<seed>}: the synthetic sessions' directory, generated on first use,
  # so that `task=multidataset` runs offline with nothing prepared (configs/task/multidataset.yaml).
  OmegaConf.register_new_resolver("jaxtrain_recordings", lambda root, seed=0: recordings.ensure_recordings(
      root, int(seed)), use_cache=True)


@dataclasses.dataclass
class MultiDatasetConfig:
  name: str = "multidataset"
  # poisson: Poisson negative log-likelihood of the counts; mse: squared error.
  loss: str = "poisson"
  # The shared core: one conv layer (with an elu) per entry.
  channels: list[int] = dataclasses.field(default_factory=lambda: [8, 8])
  kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [7, 3])
  # Readout regularisers, each a mean over every head's neurons: L1 of the spatial
  # masks and feature weights, L2 of both, and the squared Laplacian of the masks.
  readout_l1: float = 0.0
  readout_l2: float = 0.0
  readout_smoothness: float = 0.0
  response_key: str = "responses"
  mask_key: str = "neuron_mask"


class Core(nn.Module):
  """Shared conv layers: [B, H, W, 1] stimuli -> [B, H, W, C] feature maps."""

  channels: tuple[int, ...]
  kernel_sizes: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width, size in zip(self.channels, self.kernel_sizes):
      x = nn.elu(nn.Conv(width, (size, size), padding="SAME")(x))
    return x


class StackedReadout(nn.Module):
  """One factorised readout per dataset, stacked: rate = softplus(<features * mask, weights> + bias)."""

  num_datasets: int
  max_neurons: int

  @nn.compact
  def __call__(self, features: jax.Array, dataset: jax.Array) -> jax.Array:
    _, height, width, channels = features.shape
    shape = (self.num_datasets, self.max_neurons)
    spatial = self.param("spatial", nn.initializers.normal(0.01), shape + (height, width))
    weights = self.param("weights", nn.initializers.normal(0.1), shape + (channels,))
    bias = self.param("bias", nn.initializers.zeros, shape)
    pooled = jnp.einsum("bhwc,bnhw->bnc", features, spatial[dataset])
    return nn.softplus(jnp.einsum("bnc,bnc->bn", pooled, weights[dataset]) + bias[dataset])


class MultiDatasetModel(nn.Module):
  core: Core
  readout: StackedReadout

  def __call__(self, x: jax.Array, dataset: jax.Array) -> jax.Array:
    return self.readout(self.core(x), dataset)


def readout_penalty(readout: dict, l1: float, l2: float, smoothness: float) -> jax.Array:
  """The readout regularisers (see MultiDatasetConfig) of a StackedReadout's params."""
  spatial, weights = readout["spatial"], readout["weights"]
  penalty = jnp.zeros((), jnp.float32)
  if l1:
    penalty += l1 * (jnp.abs(spatial).sum((-2, -1)).mean() + jnp.abs(weights).sum(-1).mean())
  if l2:
    penalty += l2 * (jnp.square(spatial).sum((-2, -1)).mean() + jnp.square(weights).sum(-1).mean())
  if smoothness:
    masks = spatial.reshape((-1,) + spatial.shape[-2:])[..., None]
    kernel = jnp.asarray(LAPLACIAN, spatial.dtype)[:, :, None, None]
    rough = jax.lax.conv_general_dilated(masks, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    penalty += smoothness * jnp.square(rough).reshape(spatial.shape[:2] + (-1,)).sum(-1).mean()
  return penalty


def response_loss(kind: str, predicted: jax.Array, responses: jax.Array) -> jax.Array:
  """Per-neuron loss [B, N]: Poisson NLL (without the log y! constant) or squared error."""
  if kind == "poisson":
    return predicted - responses * jnp.log(predicted + 1e-6)
  return jnp.square(predicted - responses)


@register_task("multidataset", store_config=False)  # options live in configs/task/multidataset.yaml
class MultiDatasetTask(Task):
  """Neural responses of several sessions from their stimuli (see the module docstring)."""

  config_class = MultiDatasetConfig

  def __init__(self, config, example_batch):
    super().__init__(config, example_batch)
    if config.loss not in LOSSES:
      raise ConfigError(f"task.loss={config.loss!r}: choose one of: {', '.join(LOSSES)}")
    if len(config.channels) != len(config.kernel_sizes) or not config.channels:
      raise ConfigError(f"task.channels={list(config.channels)} and task.kernel_sizes={list(config.kernel_sizes)}: "
                        "need the same, non-zero length (one conv layer each)")
    for key in ("readout_l1", "readout_l2", "readout_smoothness"):
      if getattr(config, key) < 0:
        raise ConfigError(f"task.{key}={getattr(config, key)}: must be >= 0")
    self.input_shape = tuple(example_batch["x"].shape[1:])
    self.max_neurons = int(example_batch[config.response_key].shape[1])

  @classmethod
  def expected_inputs(cls, config):
    # Stimuli [H, W, 1]; responses and mask padded to one neuron count; the dataset index per row.
    return {"x": (3, "f"), config.response_key: (1, "fiu"), config.mask_key: (1, "f"), "dataset": (0, "iu")}

  @property
  def model(self) -> MultiDatasetModel:
    cfg = self.config
    return MultiDatasetModel(Core(tuple(cfg.channels), tuple(cfg.kernel_sizes)),
                             StackedReadout(max(1, len(self.dataset_names)), self.max_neurons))

  def init(self, rng):
    x = jnp.zeros((1,) + self.input_shape, jnp.float32)
    return self.model.init(rng, x, jnp.zeros((1,), jnp.int32))["params"], {}

  def predict(self, params, batch):
    """Predicted rates [B, max_neurons] for each example's dataset (padding neurons included)."""
    return self.model.apply({"params": params}, batch["x"], batch["dataset"])

  def loss(self, params, model_state, batch, rng, train):
    del rng, train
    cfg = self.config
    mask = batch[cfg.mask_key]
    per_neuron = response_loss(cfg.loss, self.predict(params, batch), batch[cfg.response_key])
    data_loss = weighted_mean((per_neuron * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0), batch)
    penalty = readout_penalty(params["readout"], cfg.readout_l1, cfg.readout_l2, cfg.readout_smoothness)
    return data_loss + penalty, ({"response_loss": data_loss, "readout_penalty": penalty}, model_state)
