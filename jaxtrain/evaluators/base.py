"""The evaluator contract, its registry, and the context evaluators run in.

An evaluator is chosen by config, `eval.evaluators: [{name: metrics}, {name: recall_at_k, k: [1, 5]}]`,
and registered like a task or a model component:

    @register_evaluator("my_metric", MyMetricConfig)   # MyMetricConfig(EvaluatorConfig)
    class MyMetric(Evaluator):
      def metric_names(self, context): return ["my_metric"]
      def evaluate(self, state, context): return {"my_metric": ...}

`metric_names` is called once when the run is built: it declares every name
`evaluate` will return (scalars.csv fixes its columns at start, and
checkpoint.monitor may name any of them) and raises ConfigError when the task
or the data cannot support the evaluator.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Iterable, Optional

import jax
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jaxtrain.core import mesh as mesh_lib
from jaxtrain.core.compile import ShapeCompiledStep
from jaxtrain.errors import ConfigError


@dataclasses.dataclass
class EvaluatorConfig:
  """Options every evaluator has; subclass it for an evaluator's own options."""

  name: str = ""
  # Steps between runs: null = trainer.eval_every; 0 = never during training.
  every: Optional[int] = None
  # Also run once when training ends.
  at_end: bool = True


class EvalContext:
  """What evaluators share: the task, the split's batches and compiled calls on them.

  Calls made with `compiled` (and the task's eval step) are jit-compiled once
  per batch shape with the run's state shardings; the split's batches are put
  on the devices once when `cache_on_device`, so a periodic evaluation costs
  only compute.
  """

  def __init__(self, task: Any, mesh: jax.sharding.Mesh, state_shardings: Any, abstract_state: Any,
               host_batches: Any, put_batch: Callable[[Any], Any], cache_on_device: bool):
    self.task = task
    self.mesh = mesh
    self.state_shardings = state_shardings
    self.abstract_state = abstract_state
    self.host_batches = host_batches  # the split in padded host batches, each with a "weight" mask
    self.put_batch = put_batch
    self.example = host_batches[0]
    self.device_batches = [put_batch(b) for b in host_batches] if cache_on_device else None
    self._compiled: dict[str, ShapeCompiledStep] = {}
    self.eval_step = self.compiled("eval_step", task.eval_step())

  def batches(self) -> Iterable[Any]:
    """The split's batches on the devices, in order."""
    return self.device_batches if self.device_batches is not None else map(self.put_batch, self.host_batches)

  def compiled(self, key: str, fn: Callable[[Any, Any], Any]) -> ShapeCompiledStep:
    """`fn(state, batch)` jit-compiled (once per batch shape, cached under `key`), outputs replicated."""
    if key not in self._compiled:
      batch_sharding = mesh_lib.batch_sharding(self.mesh)
      self._compiled[key] = ShapeCompiledStep(
          fn, name=key, in_shardings=(self.state_shardings, jax.tree.map(lambda _: batch_sharding, self.example)),
          out_shardings=mesh_lib.replicated(self.mesh), donate_state=False)
    return self._compiled[key]

  def view(self, name: str) -> ShapeCompiledStep:
    """The task's optional view `name` (embed | reconstruct) as a compiled `(state, batch) -> array`."""
    task = self.task
    views = {
        "embed": lambda state, batch: task.embed(state.params, state.model_state, batch),
        "reconstruct": lambda state, batch: task.reconstruct(state.params, state.model_state, batch,
                                                             state.step_rng()),
    }
    return self.compiled(f"view_{name}", views[name])

  def require(self, view: str, evaluator: str) -> None:
    """ConfigError unless the task offers `view`."""
    if not self.task.supports(view):
      raise ConfigError(f"eval.evaluators: {evaluator} needs a task with the `{view}` view; "
                        f"task={self.task.config.name} has none")

  def for_batches(self, host_batches: Any) -> "EvalContext":
    """The same task and shardings over other host batches (another split), with its own compiled calls."""
    return EvalContext(self.task, self.mesh, self.state_shardings, self.abstract_state, host_batches,
                       self.put_batch, cache_on_device=False)


class Evaluator(abc.ABC):
  """Turns a state into named host floats over a split. Subclasses register with `register_evaluator`."""

  def __init__(self, config: EvaluatorConfig):
    self.config = config
    self.declared_metrics: tuple[str, ...] = ()  # set by build_evaluators from `metric_names`

  @property
  def name(self) -> str:
    return self.config.name

  @abc.abstractmethod
  def metric_names(self, context: EvalContext) -> list[str]:
    """Every metric `evaluate` returns; raises ConfigError if the task or data cannot support it."""

  @abc.abstractmethod
  def evaluate(self, state: Any, context: EvalContext) -> dict[str, float]:
    """{metric_name: value} over the context's split."""


@dataclasses.dataclass(frozen=True)
class _Registered:
  evaluator_class: type
  config_class: type


_EVALUATORS: dict[str, _Registered] = {}


def register_evaluator(name: str, config_class: type = EvaluatorConfig) -> Callable[[type], type]:
  """Class decorator: makes `{name: <name>, ...options}` selectable in eval.evaluators."""
  if not (isinstance(config_class, type) and issubclass(config_class, EvaluatorConfig)):
    raise TypeError(f"evaluator {name!r}: config_class must subclass EvaluatorConfig")

  def decorate(cls: type) -> type:
    _EVALUATORS[name] = _Registered(cls, config_class)
    return cls

  return decorate


def evaluator_names() -> list[str]:
  """Names of every registered evaluator."""
  _load_builtin()
  return sorted(_EVALUATORS)


def typed_evaluator_config(node: Any, index: int) -> EvaluatorConfig:
  """One entry of eval.evaluators as its evaluator's config dataclass; ConfigError names the key."""
  _load_builtin()
  if isinstance(node, EvaluatorConfig):
    return node
  name = node.get("name") if isinstance(node, dict) else None
  if name not in _EVALUATORS:
    raise ConfigError(f"eval.evaluators[{index}].name={name!r}: choose one of: {', '.join(evaluator_names())}")
  config_class = _EVALUATORS[name].config_class
  try:
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_class), node))
  except OmegaConfBaseException as err:
    key = getattr(err, "full_key", "") or ""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    valid = ", ".join(f.name for f in dataclasses.fields(config_class))
    raise ConfigError(f"eval.evaluators[{index}].{key}: {first} ({name} keys: {valid})") from None
  if typed.every is not None and typed.every < 0:
    raise ConfigError(f"eval.evaluators[{index}].every={typed.every}: must be >= 0 (0 = only at the end)")
  return typed


def typed_evaluator_configs(nodes: Iterable[Any]) -> list[EvaluatorConfig]:
  """Every entry of eval.evaluators, typed (see `typed_evaluator_config`)."""
  typed = [typed_evaluator_config(node, i) for i, node in enumerate(nodes)]
  if not typed:
    raise ConfigError("eval.evaluators: empty; list at least one, e.g. [{name: metrics}]")
  return typed


def build_evaluators(configs: Iterable[EvaluatorConfig], context: EvalContext,
                     ) -> tuple[list[Evaluator], list[str]]:
  """The evaluators and the sorted union of their metric names; ConfigError on a name clash."""
  evaluators, owner = [], {}
  for config in typed_evaluator_configs(configs):
    evaluator = _EVALUATORS[config.name].evaluator_class(config)
    evaluator.declared_metrics = tuple(evaluator.metric_names(context))
    for metric in evaluator.declared_metrics:
      if metric in owner:
        raise ConfigError(f"eval.evaluators: metric {metric!r} comes from both {owner[metric]} and {config.name}")
      owner[metric] = config.name
    evaluators.append(evaluator)
  return evaluators, sorted(owner)


def run_evaluators(evaluators: Iterable[Evaluator], state: Any, context: EvalContext) -> dict[str, float]:
  """The merged results of `evaluators` on `state`."""
  results: dict[str, float] = {}
  for evaluator in evaluators:
    results.update({k: float(v) for k, v in evaluator.evaluate(state, context).items()})
  return results


def _load_builtin() -> None:
  # Imported for their registrations; late, because they import this module.
  import jaxtrain.evaluators.metrics  # noqa: F401
  import jaxtrain.evaluators.neural_correlation  # noqa: F401
  import jaxtrain.evaluators.reconstruction  # noqa: F401
  import jaxtrain.evaluators.retrieval  # noqa: F401
