"""Attack a folder of images into a run folder: the engine behind ``sai-attack attack``.

* :mod:`~sai_attack.pipeline.config`: :class:`AttackConfig` and :class:`RunOptions`, generated
  from the option table;
* :mod:`~sai_attack.pipeline.loading`: decoding, resizing and segmentation in worker processes;
* :mod:`~sai_attack.pipeline.cache` and :mod:`~sai_attack.pipeline.stores`: the template cache
  (templates, clean predictions, attention maps, keyed by image content and settings);
* :mod:`~sai_attack.pipeline.clean`: the clean pass of a batch (predictions, attention, targets);
* :mod:`~sai_attack.pipeline.batch`: the attack of a batch, measured on its 8-bit images;
* :mod:`~sai_attack.pipeline.mindelta`: :class:`MinDelta`, each image's smallest successful delta;
* :mod:`~sai_attack.pipeline.run`: :class:`AttackRun`, the resumable loop over the batches;
* :mod:`~sai_attack.pipeline.sweeps`: :func:`sweep`, one run per delta sharing the cache;
* :mod:`~sai_attack.pipeline.summary`: the content of ``summary.json``.

The run folder itself (layout, writer, reader) belongs to :mod:`sai_attack.runs`.
"""

from sai_attack.pipeline.config import AttackConfig, RunOptions
from sai_attack.pipeline.mindelta import MinDelta
from sai_attack.pipeline.run import STAGES, AttackRun, RunSummary
from sai_attack.pipeline.sweeps import SweepSummary, sweep

__all__ = [
    "STAGES",
    "AttackConfig",
    "AttackRun",
    "MinDelta",
    "RunOptions",
    "RunSummary",
    "SweepSummary",
    "sweep",
]
