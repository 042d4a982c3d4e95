"""jaxtrain: pure, compiled training steps for JAX/Flax."""

from jaxtrain.long_lived import imports_uncollected

# ~200k objects that live as long as the process appear here; collecting while they do
# only scans them again and again (jaxtrain/long_lived.py).
with imports_uncollected():
  from jaxtrain.api import Result, compose, run
  from jaxtrain.models.registry import Shapes, register_component
  from jaxtrain.tasks import Task, register_task

__all__ = ["Result", "Shapes", "Task", "compose", "register_component", "register_task", "run"]
__version__ = "0.1.0"
