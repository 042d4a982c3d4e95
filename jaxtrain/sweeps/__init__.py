"""Hyperparameter sweeps: an Optuna study whose trials are jaxtrain runs (`python -m jaxtrain.sweep`)."""
