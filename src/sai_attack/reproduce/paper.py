"""The numbers Dong et al. (CVPR 2020) report, for the cells where the paper has one.

All values are success or detection rates in percent, measured by the authors on 2000 ImageNet
images with Inception-v3 as the white-box model (Inc-v4, IncRes-v2 and an adversarially trained
Inc-v3 as black-box models). Our models and data differ, so they are a reference, not a target.
"""

from __future__ import annotations

TABLE1_MODELS = ("Inc-v3*", "Inc-v4", "IncRes-v2", "Inc-v3adv")
TABLE1 = {
    "fgm": (84.00, 54.75, 56.75, 56.05),
    "sa-fgm": (73.80, 56.20, 51.55, 56.75),
    "ifgm": (99.80, 40.65, 38.00, 30.70),
    "sai-fgm": (100.00, 68.35, 64.95, 65.05),
    "mifgm": (99.90, 66.45, 67.95, 62.40),
    "m-sai-fgm": (99.95, 68.50, 66.10, 67.45),
}
"""Table 1, delta = 16: white-box then three black-box success rates."""

TABLE2 = {
    ("fgm", 0.0): {2: 94.32, 4: 95.59, 6: 96.28, 8: 97.09},
    ("ifgm", 0.0): {2: 94.11, 4: 94.74, 6: 95.45, 8: 96.01},
    ("sai-fgm", 0.0): {2: 75.50, 4: 82.10, 6: 85.00, 8: 87.20},
    ("sai-fgm", 2.0): {2: 72.40, 4: 78.20, 6: 82.00, 8: 84.20},
    ("sai-fgm", 4.0): {2: 63.30, 4: 72.10, 6: 76.40, 8: 80.90},
}
"""Table 2: steganalysis detection accuracy by (method, beta) and delta."""

TABLE3 = {
    "avgpool": {
        "ifgm": {4: (73.67, 20.55, 7.07), 8: (85.94, 31.21, 11.47), 16: (95.13, 46.02, 20.36)},
        "sai-fgm": {4: (93.27, 65.14, 36.91), 8: (97.44, 79.96, 58.03), 16: (99.57, 91.48, 77.35)},
    },
    "maxpool": {
        "ifgm": {4: (41.45, 16.67, 13.47), 8: (54.79, 27.29, 20.39), 16: (68.36, 37.06, 30.38)},
        "sai-fgm": {4: (70.37, 39.20, 34.67), 8: (85.10, 61.64, 55.73), 16: (93.85, 83.29, 79.82)},
    },
}
"""Table 3: gray-box success after pooling with kernel 3, 5, 7, by op, method and delta."""

TABLE3_KERNELS = (3, 5, 7)
"""The pooling kernels of :data:`TABLE3`'s columns."""


def table3(op: str, delta: float, method: str) -> dict[int, float]:
    """Table 3's values of one row by kernel size; empty where the paper has no such row."""
    values = TABLE3.get(op, {}).get(method, {}).get(int(delta))
    return dict(zip(TABLE3_KERNELS, values, strict=True)) if values else {}


TABLE4 = {
    "ifgm": {"white-box": 99.40, "detection": 94.74, "resize": 46.05, "jpeg": 68.40, "tvm": 44.60},
    "slic": {"white-box": 98.90, "detection": 82.10, "resize": 82.17, "jpeg": 91.40, "tvm": 82.00},
    "lsc": {"white-box": 98.90, "detection": 82.75, "resize": 83.10, "jpeg": 91.80, "tvm": 83.50},
    "seeds": {"white-box": 98.75, "detection": 82.00, "resize": 81.65, "jpeg": 91.21, "tvm": 81.70},
}
"""Table 4, delta = 4: resize gamma = 2, JPEG q = 55."""

FIGURE2 = {"foreground": 94.03, "background": 46.35}
"""Sec. 3.2: I-FGM (delta = 2) noise kept on the foreground / background half only."""

HILL = {"foreground": 5269.94, "background": 18853.42}
"""Sec. 3.2: mean HILL cost of foreground and background regions (larger = smoother)."""

GRAD_MODES = {"noise": 98.90, "mean": 95.95, "max": 84.20}
"""Sec. 4.4: white-box success at delta = 4 by superpixel gradient mode."""

TEXT = {
    "phi": "best at phi = 4/12, about 10 points more black-box success than phi = 0 (Fig. 8b)",
    "superpixel_size": "white-box success falls slightly from S = 2 to 8; success after resizing "
    "(gamma = 3) is best at S = 5 (Fig. 8a)",
    "resize_delta16": "SAI-FGM stays above 80% for every gamma at delta = 16 (Fig. 4)",
}
"""Findings the paper states without a table."""
