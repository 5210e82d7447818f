"""The :data:`DEFENSES` registry and the ``name:param`` specs the command line builds from it.

A spec is ``name``, ``name:value``, a list ``name:v1,v2,...`` or a sweep ``name:start..stop:step``
(see :func:`expand_defense_spec`). The registry lives here, next to the parser that reads it,
rather than in the package's ``__init__``: the defense modules must not import the package, and
the parser needs the registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from sai_attack.defenses.base import Defense, NoDefense
from sai_attack.defenses.compression import JPEG, BitDepth, DnnJPEG
from sai_attack.defenses.filters import AvgPool, MaxPool, Median, Resize
from sai_attack.defenses.total_variation import TVM

MAX_SWEEP_VALUES = 1000

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls
    for cls in (NoDefense, Resize, JPEG, DnnJPEG, AvgPool, MaxPool, TVM, BitDepth, Median)
}
"""Defense classes by spec name: the one list of defenses, in the order they are listed."""


def _param_required(cls: type[Defense]) -> bool:
    """Whether a bare ``name`` spec is an error: the constructor has no default for the parameter.

    Read from the signature so that it cannot drift from the constructors (``tvm`` has a default
    weight, 0.03, so ``tvm`` alone is valid; ``resize`` alone is not).
    """
    if cls.param_name is None:
        return False
    parameter = inspect.signature(cls).parameters[cls.param_name]
    return parameter.default is inspect.Parameter.empty


def _number(text: str, spec: str) -> Decimal:
    """Parse one value of ``spec`` exactly (decimal, so sweeps do not accumulate float error)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"defense {spec!r}: {text.strip()!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"defense {spec!r}: {text.strip()!r} is not a finite number")
    return value


def _make(cls: type[Defense], value: Decimal) -> Defense:
    """Build ``cls`` from a parsed value: an int for integer parameters when it is integral.

    Non-integral values stay floats so that the defense's own check rejects them with its message.
    """
    number: float | int = float(value)
    if cls.param_type is int and value == value.to_integral_value():
        number = int(value)
    return cls(number)


def _sweep(arg: str, spec: str) -> list[Decimal]:
    """The values of a sweep ``start..stop[:step]``, both ends included."""
    start_text, _, rest = arg.partition("..")
    stop_text, has_step, step_text = rest.partition(":")
    start = _number(start_text, spec)
    stop = _number(stop_text, spec)
    step = _number(step_text, spec) if has_step else Decimal(1)
    if step <= 0:
        raise ValueError(f"sweep {spec!r}: the step must be > 0, got {step}")
    if stop < start:
        raise ValueError(f"sweep {spec!r}: the end {stop} is below the start {start}")
    count = int((stop - start) / step) + 1
    if count > MAX_SWEEP_VALUES:
        raise ValueError(
            f"sweep {spec!r} has {count} values; at most {MAX_SWEEP_VALUES} are allowed"
        )
    return [start + i * step for i in range(count)]


def expand_defense_spec(spec: str) -> list[Defense]:
    """Turn one spec into defenses.

    Accepted forms: ``name`` (``none``, ``tvm``), ``name:value`` (``resize:2``), a list
    ``name:v1,v2,...`` (``avgpool:3,5,7``), and a sweep ``name:start..stop:step`` with both ends
    included (``resize:1.0..3.0:0.1``, ``jpeg:5..95:10``; the step defaults to 1). Sweep values
    are computed in decimal arithmetic, so ``1.0..3.0:0.1`` gives exactly 21 values.

    Args:
        spec: The spec.

    Returns:
        The defenses, in order.

    Raises:
        ValueError: Unknown name, missing or malformed parameter, or a parameter out of range
            (the defense's own message).
    """
    text = spec.strip()
    name, sep, arg = text.partition(":")
    name = name.strip().lower()
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    cls = DEFENSES[name]
    if not sep or not arg.strip():
        if sep:
            raise ValueError(f"defense {spec!r} has an empty parameter after ':'")
        if _param_required(cls):
            raise ValueError(
                f"defense {name!r} needs its parameter {cls.param_name}: "
                f"{name}:{cls.param_name.upper()} (e.g. {cls.example})"
            )
        return [cls()]
    if cls.param_name is None:
        raise ValueError(f"defense {name!r} takes no parameter, got {spec!r}")
    arg = arg.strip()
    values = _sweep(arg, spec) if ".." in arg else [_number(v, spec) for v in arg.split(",")]
    return [_make(cls, v) for v in values]


def parse_defense(spec: str) -> Defense:
    """Parse a single ``name[:param]`` spec (no sweeps or lists)."""
    defenses = expand_defense_spec(spec)
    if len(defenses) != 1:
        raise ValueError(f"defense {spec!r} names {len(defenses)} defenses; expected one")
    return defenses[0]


def parse_defenses(specs: Iterable[str | Defense]) -> list[Defense]:
    """Expand specs (and pass through ready objects), dropping duplicates, keeping order."""
    result: list[Defense] = []
    seen: set[str] = set()
    for spec in specs:
        for defense in [spec] if isinstance(spec, Defense) else expand_defense_spec(spec):
            key = repr((type(defense).__name__, defense.__dict__))
            if key not in seen:
                seen.add(key)
                result.append(defense)
    return result
