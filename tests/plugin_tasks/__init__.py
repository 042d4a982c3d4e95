"""User tasks that live outside the jaxtrain package (see test_plugin_task.py)."""
