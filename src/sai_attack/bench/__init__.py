"""``sai-attack bench``: where the time goes, method by method, on one machine.

Each method runs through the real attack pipeline (the same code as ``sai-attack attack``) on the
same images, batch size and device, into a temporary folder. Reported per method: images/s and
seconds per image end to end, the time split into stages, the ratio to I-FGM in the same run, and
the attack's efficiency ``floor * T / attack time``, where the floor is the model's bare
forward+backward pass on a batch in the layout the run uses (:mod:`.timing`). The floor is also
given in every layout. As external references (:mod:`.reference`), torchattacks' ``PGDL2`` and
``PGD`` (L-infinity), with the same steps and budget on the same batches, are timed against the
attack loop of I-FGM, on the network as a user would load it (the plain module in PyTorch's
default layout) and on the same prepared model. Peak memory (RSS, and CUDA memory on GPU) is
reported after the methods and for the whole process (:mod:`.report` formats it all).
"""

from sai_attack.bench.report import format_report, write_json
from sai_attack.bench.timing import (
    STAGES,
    BenchConfig,
    BenchReport,
    MethodTiming,
    forward_backward_floor,
    peak_rss_mb,
    run_bench,
)

__all__ = [
    "STAGES",
    "BenchConfig",
    "BenchReport",
    "MethodTiming",
    "format_report",
    "forward_backward_floor",
    "peak_rss_mb",
    "run_bench",
    "write_json",
]
