"""Tasks: one file per task, selected by `task=<name>`."""

from jaxtrain.tasks.base import Task
from jaxtrain.tasks.registry import load_plugins, register_task, task_class, task_names

__all__ = ["Task", "load_plugins", "register_task", "task_class", "task_names"]
