"""Imports every built-in model component so that it registers itself."""

import jaxtrain.models.conv  # noqa: F401
import jaxtrain.models.gnn  # noqa: F401
import jaxtrain.models.latents  # noqa: F401
import jaxtrain.models.mlp  # noqa: F401
