"""``sai-attack reproduce``: the paper's Section 4, end to end, in one report.

Example::

    from pathlib import Path
    from sai_attack.reproduce import PRESETS, Settings, run_reproduce

    report = run_reproduce(Settings(Path("images"), Path("out"), PRESETS["quick"]))
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

from sai_attack.reproduce.experiments import Reproduction
from sai_attack.reproduce.plan import BLACK_BOX_MODELS, RunSpec, Section, Settings, plan
from sai_attack.reproduce.presets import PRESETS, Preset, with_images
from sai_attack.reproduce.progress import Progress
from sai_attack.reproduce.report import typed_command, write_report
from sai_attack.reproduce.sections import SECTIONS
from sai_attack.runtime import library_versions

logger = logging.getLogger(__name__)

__all__ = [
    "BLACK_BOX_MODELS",
    "PRESETS",
    "SECTIONS",
    "Preset",
    "Reproduction",
    "RunSpec",
    "Section",
    "Settings",
    "run_reproduce",
    "with_images",
]


def run_reproduce(settings: Settings) -> dict[str, Path]:
    """Run (or resume) every experiment and write the report.

    Returns:
        Paths of ``report.html`` and ``report.md``.
    """
    started = time.perf_counter()
    wall_start = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    settings.out.mkdir(parents=True, exist_ok=True)
    r = Reproduction(settings, plan(SECTIONS, settings.preset))
    specs = r.specs
    logger.info(
        "preset %s: %d attack runs on up to %d images, then evaluation, detection and figures",
        settings.preset.name,
        len(specs),
        settings.preset.images,
    )
    progress = Progress(r.work_units(SECTIONS))
    for spec in specs:
        progress.step(f"attack {spec.key}", lambda spec=spec: r.attack(spec))
    for section in SECTIONS:
        progress.step(section.name, lambda section=section: section.fill(r))
    p = settings.preset
    meta = {
        "command": typed_command(),
        "preset": f"{p.name} ({p.images} images, ablations on {p.ablation_images})",
        "data": str(settings.data),
        "white-box model": settings.model,
        "black-box models": ", ".join([*settings.black_box, *settings.targets]) or "none",
        "protocols": "paper (baselines within the L2 ball, superpixel methods at the full "
        "budget) and matched (every method at the full budget, --budget exact)",
        "budget": "eps = delta * sqrt(N), N = C*H*W at the attack resolution, 0-255 units; "
        "T = 10, alpha = eps/T; success measured on the saved 8-bit PNGs over the images each "
        "model classifies correctly",
        "attack runs": f"{len(specs)} (folders under runs/)",
        "seed": settings.seed,
        "device": settings.device,
        "started": wall_start,
        "run time": f"{time.perf_counter() - started:.0f} s",
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "versions": ", ".join(f"{k} {v}" for k, v in library_versions().items()),
    }
    paths = write_report(settings.out, r.tables, r.figures, r.findings, meta, r.inputs())
    logger.info("report: %s (%.0f s)", paths["html"], time.perf_counter() - started)
    return paths
