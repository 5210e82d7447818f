"""``run.json`` and ``summary.json``: what a run was, under one set of parameter names.

Both files hold ``parameters``: every attack and model option of the option table
(:data:`sai_attack.options.OPTIONS`) under its table name, with the budget protocol and the
image size resolved (never ``null`` for "the default"). ``run.json`` is written before any work,
``summary.json`` at the end, with the counts and timings.

Folders written by sai-attack up to commit f20f404 (schema 1) kept the parameters twice, as
``config`` (``iters``, ``segments``, ``budget: null``) and as ``parameters``/``attack`` (``steps``,
``n_segments``, the resolved budget); :func:`read_record` reads both kinds.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sai_attack import options
from sai_attack.runs.layout import RunLayout

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""The record format written now; folders without a ``schema`` field are schema 1."""

PROTOCOL_TEXT = {
    "within": "perturbation projected into the L2 ball ||r|| <= eps",
    "exact": "perturbation rescaled to ||r|| = eps (Scale_eps), reduced only by clipping",
}
"""What each budget protocol means, as written into ``summary.json``."""


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; ``{}`` when the file is missing, unreadable or not an object."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        logger.warning("cannot read %s: %s", path, exc)
        return {}
    if not isinstance(value, dict):
        logger.warning("ignoring %s: not a JSON object", path)
        return {}
    return value


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def normalize_parameters(record: dict) -> dict[str, Any]:
    """The parameters of a ``run.json`` or ``summary.json`` of any schema, under table names."""
    if "schema" in record:
        return dict(_object(record.get("parameters")))
    config = _object(record.get("config"))
    params = {options.RENAMED.get(k, k): v for k, v in config.items()}
    # The attack's own description holds the resolved values (budget, fixed steps).
    described = _object(record.get("parameters")) or _object(record.get("attack"))
    params.update({k: v for k, v in described.items() if k in options.OPTIONS})
    if isinstance(record.get("image_size"), int):
        params["image_size"] = record["image_size"]
    return params


@dataclass
class RunRecord:
    """What a run folder says about its run.

    Attributes:
        method: The attack method, ``""`` when unknown.
        model: The attacked model's name, ``""`` when unknown.
        parameters: Every recorded parameter under its option-table name.
        summary: The whole ``summary.json`` (``{}`` when missing).
        schema: 2 for folders written now, 1 for earlier ones.
    """

    method: str = ""
    model: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def get(self, name: str, default: Any = None) -> Any:
        """The recorded value of parameter ``name``."""
        return self.parameters.get(name, default)

    def number(self, name: str) -> float | None:
        """A numeric parameter, or None when it is missing or not a number."""
        value = self.parameters.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            return None


def _has_type(value: Any, kind: type) -> bool:
    """Whether a JSON value is of an option's type (bools are not numbers)."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind in (int, float):
        if isinstance(value, int):  # JSON integers may exceed any float
            return kind is int or abs(value) <= sys.float_info.max
        return isinstance(value, float) and (kind is float or value.is_integer())
    return isinstance(value, kind)


def _typed(parameters: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``parameters`` without the values that do not have their option's type (logged).

    A tampered record may hold any JSON value anywhere; readers can then trust that a recorded
    option is None or of its type (ranges and names are not checked: older versions had others).
    """
    kept: dict[str, Any] = {}
    for name, value in parameters.items():
        option = options.OPTIONS.get(name)
        if option is None or value is None or _has_type(value, option.type):
            kept[name] = value
        else:
            logger.warning(
                "%s: ignoring recorded %s = %.60r (not of type %s)",
                folder, name, value, option.type.__name__,
            )  # fmt: skip
    return kept


def _text(*values: Any) -> str:
    """The first non-empty string among ``values``, else ``""``."""
    return next((v for v in values if isinstance(v, str) and v), "")


def read_record(folder: Path) -> RunRecord:
    """Read ``summary.json`` (else ``run.json``) of a run folder of any schema."""
    layout = RunLayout(folder)
    summary = read_json(layout.summary)
    run = read_json(layout.record)
    parameters = _typed({**normalize_parameters(run), **normalize_parameters(summary)}, folder)
    schema = summary.get("schema", run.get("schema", 1))
    return RunRecord(
        method=_text(summary.get("method"), run.get("method"), parameters.get("method")),
        model=_text(summary.get("model"), run.get("model"), parameters.get("model")),
        parameters=parameters,
        summary=summary,
        schema=schema if isinstance(schema, int) and not isinstance(schema, bool) else 1,
    )
