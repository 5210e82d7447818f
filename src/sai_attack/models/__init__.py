"""Classifiers: the [0, 1]-input wrapper, built-in models, loading, layouts, deployed targets.

Deployed targets are TensorFlow Lite and ONNX files, used as black-box (transfer) targets.
"""

from sai_attack.models.deployed import (
    DeployedModel,
    ONNXModel,
    TFLiteModel,
    load_target,
    split_target_spec,
)
from sai_attack.models.ensemble import EnsembleClassifier
from sai_attack.models.layout import (
    measure_memory_formats,
    resolve_memory_format,
    use_memory_format,
)
from sai_attack.models.wrapper import IMAGENET_MEAN, IMAGENET_STD, MEMORY_FORMATS, ImageClassifier
from sai_attack.models.zoo import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    WeightsError,
    load_model,
    load_plain_model,
    load_state_dict,
)

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEMORY_FORMATS",
    "MODELS",
    "DeployedModel",
    "EnsembleClassifier",
    "ImageClassifier",
    "ModelSpec",
    "ONNXModel",
    "TFLiteModel",
    "WeightsError",
    "load_model",
    "load_plain_model",
    "load_state_dict",
    "load_target",
    "measure_memory_formats",
    "resolve_memory_format",
    "split_target_spec",
    "use_memory_format",
]
