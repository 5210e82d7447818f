"""Attack a folder of images into a run folder: the engine behind ``sai-attack attack``.

* :mod:`~sai_attack.pipeline.config`: :class:`AttackConfig` and :class:`RunOptions`, generated
  from the option table;
* :mod:`~sai_attack.pipeline.loading`: decoding, resizing and segmentation in worker processes;
* :mod:`~sai_attack.pipeline.batch`: the clean pass, the attention map and the attack of a batch;
* :mod:`~sai_attack.pipeline.run`: :class:`AttackRun`, the resumable loop over the batches;
* :mod:`~sai_attack.pipeline.summary`: the content of ``summary.json``.

The run folder itself (layout, writer, reader) belongs to :mod:`sai_attack.runs`.
"""

from sai_attack.pipeline.config import AttackConfig, RunOptions
from sai_attack.pipeline.run import STAGES, AttackRun, RunSummary

__all__ = ["STAGES", "AttackConfig", "AttackRun", "RunOptions", "RunSummary"]
