"""The model zoo. Every model declares ``cut_points``: its named cuts, shallowest first."""

from splitveil.models import he_cnn, lenet, resnet, vgg  # noqa: F401  (registers the models)
from splitveil.models.registry import MODELS, create_model, list_models

__all__ = ["MODELS", "create_model", "list_models"]
