"""The run folder: its layout, its record, its one writer and its one reader.

``sai-attack attack INPUT --out DIR`` writes a run folder; ``evaluate``, ``detect``, ``texture``,
the analyses and ``reproduce`` read it. Everything that knows where a file of a run folder lies,
what its record holds or how a row of ``results.csv`` is written lives in this package:

* :mod:`~sai_attack.runs.layout`: the file names and the one check that a path read from a run
  record stays inside its folder;
* :mod:`~sai_attack.runs.results`: ``results.csv`` (columns, appends that cannot tear a row,
  reading that drops a torn last line);
* :mod:`~sai_attack.runs.record`: ``run.json`` and ``summary.json`` (one set of parameter names,
  and the names earlier versions wrote);
* :mod:`~sai_attack.runs.writer`: :class:`RunWriter`, the only writer (lock, resume, PNGs);
* :mod:`~sai_attack.runs.reader`: :func:`read_run`, the only reader, with one validation;
* :mod:`~sai_attack.runs.sweep`: the folder of a delta sweep (a run folder per delta,
  ``sweep.csv``, ``sweep.png``).
"""

from sai_attack.runs.layout import RunLayout, inside
from sai_attack.runs.reader import Run, RunFolderError, RunItem, read_run, read_runs
from sai_attack.runs.record import PROTOCOL_TEXT, SCHEMA_VERSION, read_json, read_record
from sai_attack.runs.results import (
    RESULT_COLUMNS,
    STATUS_OK,
    append_rows,
    format_cell,
    read_results,
    write_results,
)
from sai_attack.runs.sweep import SWEEP_COLUMNS, SweepLayout, read_sweep, write_sweep
from sai_attack.runs.writer import RunWriter

__all__ = [
    "PROTOCOL_TEXT",
    "RESULT_COLUMNS",
    "SCHEMA_VERSION",
    "STATUS_OK",
    "SWEEP_COLUMNS",
    "Run",
    "RunFolderError",
    "RunItem",
    "RunLayout",
    "RunWriter",
    "SweepLayout",
    "append_rows",
    "format_cell",
    "inside",
    "read_json",
    "read_record",
    "read_results",
    "read_run",
    "read_runs",
    "read_sweep",
    "write_results",
    "write_sweep",
]
