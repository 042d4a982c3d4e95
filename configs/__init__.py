# Hydra config tree, installed as the package data `jaxtrain.configs`.
