"""sai-attack: superpixel-guided attentional adversarial attacks (Dong et al., CVPR 2020).

Quick use::

    from sai_attack import SAIFGM, load_model
    model = load_model("efficientnet-lite0")
    adv = SAIFGM(model, delta=4)(images, labels)   # images: (B, 3, H, W) in [0, 1]
"""

import os

# PyTorch's OpenMP threads sleep while they wait instead of spinning (unless the environment
# says otherwise; it takes effect only when torch is imported after this). Spinning threads take
# the cores from the loader workers' segmentation and from any other process: on this project's
# 2-core CPU under load, a Lite0 forward+backward took 4-10 x longer with spinning
# (benchmarks/layout.py). Set before the imports below, which load torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sai_attack.attacks import (
    ATTACKS,
    FGM,
    IFGM,
    MIFGM,
    MSAIFGM,
    SAFGM,
    SAIFGM,
    Attack,
    AttackResult,
)
from sai_attack.models import MODELS, ImageClassifier, load_model
from sai_attack.runtime import __version__

__all__ = [
    "ATTACKS",
    "FGM",
    "IFGM",
    "MIFGM",
    "MODELS",
    "MSAIFGM",
    "SAFGM",
    "SAIFGM",
    "Attack",
    "AttackResult",
    "ImageClassifier",
    "__version__",
    "load_model",
]
