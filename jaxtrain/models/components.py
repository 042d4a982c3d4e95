"""Imports every built-in model component so that it registers itself."""

import jaxtrain.models.latents  # noqa: F401
import jaxtrain.models.mlp  # noqa: F401
