"""Deployed models as black-box targets: TensorFlow Lite and ONNX files.

A :class:`DeployedModel` behaves like :class:`~sai_attack.models.ImageClassifier` for evaluation:
it takes (B, 3, H, W) RGB tensors in [0, 1] and returns (B, num_classes) scores. It is not
differentiable (the interpreter runs outside PyTorch), so it serves as a transfer (black-box)
target only.

What is read from the file: the input size, the layout (NHWC or NCHW), the input dtype and, for
TensorFlow Lite, its quantisation (scale, zero point) and the output quantisation. What cannot be
read from a file is the float normalisation a model expects, and whether its first output is a
"background" class; both are options (``mean``/``std`` and ``label_offset``).

Targets are named by specs that :func:`load_target` understands: built-in names
(``efficientnet-lite0``), ``torchvision:<arch>`` / ``timm:<name>`` (with weights), and
``tflite:PATH`` / ``onnx:PATH``. Options follow an ``@``: ``tflite:m.tflite@label-offset=1``,
``onnx:m.onnx@mean=0.5,std=0.5,size=224``, ``torchvision:resnet50@weights=r50.pt``.

Modules: :mod:`~sai_attack.models.deployed.base` (:class:`DeployedModel`, the preprocessing, and
:class:`FileModel`, the model file and interpreter), :mod:`~sai_attack.models.deployed.tflite`,
:mod:`~sai_attack.models.deployed.onnx` and :mod:`~sai_attack.models.deployed.targets` (specs).
"""

from sai_attack.models.deployed.base import NUM_IMAGENET_CLASSES, DeployedModel, FileModel
from sai_attack.models.deployed.onnx import ONNXModel
from sai_attack.models.deployed.targets import (
    DEPLOYED_PREFIXES,
    TARGET_OPTIONS,
    load_target,
    split_target_spec,
)
from sai_attack.models.deployed.tflite import TFLiteModel

__all__ = [
    "DEPLOYED_PREFIXES",
    "NUM_IMAGENET_CLASSES",
    "TARGET_OPTIONS",
    "DeployedModel",
    "FileModel",
    "ONNXModel",
    "TFLiteModel",
    "load_target",
    "split_target_spec",
]
