"""jaxtrain: pure, compiled training steps for JAX/Flax."""

from jaxtrain.api import Result, compose, run
from jaxtrain.tasks import Task, register_task

__all__ = ["Result", "Task", "compose", "register_task", "run"]
__version__ = "0.1.0"
