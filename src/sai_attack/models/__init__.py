"""Classifiers: the [0, 1]-input wrapper, built-in models, model loading, deployed targets.

Deployed targets are TensorFlow Lite and ONNX files, used as black-box (transfer) targets.
"""

from sai_attack.models.deployed import (
    DeployedModel,
    ONNXModel,
    TFLiteModel,
    load_target,
    split_target_spec,
)
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
    "DeployedModel",
    "ImageClassifier",
    "ModelSpec",
    "ONNXModel",
    "TFLiteModel",
    "WeightsError",
    "load_model",
    "load_state_dict",
    "load_target",
    "split_target_spec",
]
