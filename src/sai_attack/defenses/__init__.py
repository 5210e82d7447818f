"""Image-processing defenses: transformations applied to images before the classifier.

Every defense is a plain function on (B, 3, H, W) tensors in [0, 1] (``resize``, ``jpeg``, ...)
with a matching parameterised object (:class:`Resize`, :class:`JPEG`, ...) whose constructor checks
its parameter. The objects are what the command line builds from ``name:param`` specs through
:data:`DEFENSES` and :func:`parse_defenses`, which also expands sweeps (``resize:1.0..3.0:0.1``)
and lists (``avgpool:3,5,7``).

Defenses work in pixel space, before any model normalisation: the classifiers in
:mod:`sai_attack.models` normalise internally, so a defense only maps [0, 1] images to [0, 1]
images of the same size. Section 4.2 of Dong et al. (CVPR 2020) evaluates its attacks against
these transformations ("gray-box": the attacker does not know about the defense).

Modules: :mod:`~sai_attack.defenses.base` (the :class:`Defense` base class),
:mod:`~sai_attack.defenses.filters` (resizing, pooling, median),
:mod:`~sai_attack.defenses.compression` (JPEG, DNN-oriented JPEG, bit depth),
:mod:`~sai_attack.defenses.total_variation` (TVM) and :mod:`~sai_attack.defenses.specs` (the
registry and spec parsing).
"""

from sai_attack.defenses.base import Defense, NoDefense
from sai_attack.defenses.compression import (
    DNN_JPEG_BASE_TABLE,
    JPEG,
    BitDepth,
    DnnJPEG,
    bitdepth,
    dnn_jpeg,
    dnn_jpeg_table,
    jpeg,
)
from sai_attack.defenses.filters import (
    AvgPool,
    MaxPool,
    Median,
    Resize,
    avgpool,
    maxpool,
    median,
    resize,
)
from sai_attack.defenses.specs import (
    DEFENSES,
    MAX_SWEEP_VALUES,
    expand_defense_spec,
    parse_defense,
    parse_defenses,
)
from sai_attack.defenses.total_variation import (
    CPU_TVM_CHUNK,
    TVM,
    dropout_mask,
    tv_energy,
    tv_reconstruct,
    tvm,
)

__all__ = [
    "CPU_TVM_CHUNK",
    "DEFENSES",
    "DNN_JPEG_BASE_TABLE",
    "JPEG",
    "MAX_SWEEP_VALUES",
    "TVM",
    "AvgPool",
    "BitDepth",
    "Defense",
    "DnnJPEG",
    "MaxPool",
    "Median",
    "NoDefense",
    "Resize",
    "avgpool",
    "bitdepth",
    "dnn_jpeg",
    "dnn_jpeg_table",
    "dropout_mask",
    "expand_defense_spec",
    "jpeg",
    "maxpool",
    "median",
    "parse_defense",
    "parse_defenses",
    "resize",
    "tv_energy",
    "tv_reconstruct",
    "tvm",
]
