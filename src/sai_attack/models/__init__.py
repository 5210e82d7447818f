"""Classifiers: the [0, 1]-input wrapper, built-in pretrained models, and model loading."""

from sai_attack.models.wrapper import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from sai_attack.models.zoo import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    WeightsError,
    load_model,
    load_state_dict,
)

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "ImageClassifier",
    "ModelSpec",
    "WeightsError",
    "load_model",
    "load_state_dict",
]
