"""Command-line arguments built from the option table, and argument types for the rest.

Every option of :data:`sai_attack.options.OPTIONS` becomes an argument here with its table
flag, default, check and help; commands pick the options they take with :func:`add_options`
and read them back with :func:`option_values`. Options only one command has (``--splits``,
``--repeats``, ...) are declared as :class:`~sai_attack.options.Option` objects too, so that they
parse and fail the same way.
"""

from __future__ import annotations

import argparse
import inspect
import textwrap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sai_attack.attacks  # noqa: F401  (registers the choices of method, loss, superpixel, ...)
from sai_attack import options as table
from sai_attack.options import Option
from sai_attack.pipeline import targets as _targets  # noqa: F401  (registers target_mode)


def parse_value(option: Option, text: str) -> Any:
    """Parse one command-line value of ``option`` and check it (errors name the parameter)."""
    try:
        if option.type is int:
            value: Any = int(text)
        elif option.type is float and option.fraction and "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        elif option.type is float:
            value = float(text)
        else:
            value = text
    except (ValueError, ZeroDivisionError):
        kind = "an integer" if option.type is int else "a number"
        raise argparse.ArgumentTypeError(f"{option.name} must be {kind}, got {text!r}") from None
    try:
        return option.check(value)
    except ValueError as exc:
        if option.choices:
            raise argparse.ArgumentTypeError(str(exc)) from None
        # Show the value as typed (4/12, 1e300), not as parsed.
        message = str(exc).rsplit(", got ", 1)[0]
        raise argparse.ArgumentTypeError(f"{message}, got {text}") from None


def value_type(option: Option) -> Callable[[str], Any]:
    """An argparse ``type`` for ``option``."""

    def parse(text: str) -> Any:
        return parse_value(option, text)

    parse.__name__ = option.name  # argparse names the type in some messages
    return parse


def _help(option: Option, default: Any) -> str:
    if option.type is bool or default is None:
        return option.help
    if option.fraction and abs(default - 4 / 12) < 1e-12:
        shown = "4/12"  # how the paper writes the default phi
    elif isinstance(default, float):
        shown = f"{default:g}"
    else:
        shown = str(default)
    return f"{option.help} (default {shown})"


class _JoinWords(argparse.Action):
    """Store one or more words as one space-separated string (options with ``many``)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        setattr(namespace, self.dest, " ".join(values))


def argument(option: Option, default: Any = None, help: str | None = None) -> dict[str, Any]:
    """The ``add_argument`` keywords of ``option`` (``default`` overrides the table's)."""
    value = option.default if default is None else default
    kwargs: dict[str, Any] = {"dest": option.name, "help": help or _help(option, value)}
    if option.type is bool:
        kwargs["action"] = "store_false" if option.inverted else "store_true"
        kwargs["default"] = value
        return kwargs
    kwargs.update(type=value_type(option), default=value)
    if option.many:
        kwargs.update(nargs="+", action=_JoinWords)
    if option.choices:
        kwargs["choices"] = list(option.names())
    if option.metavar:
        kwargs["metavar"] = option.metavar
    return kwargs


def add_options(
    parser: argparse.ArgumentParser,
    names: Iterable[str],
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
    nargs: Mapping[str, str] | None = None,
) -> None:
    """Add the table options ``names`` to ``parser``, in argument groups by option group.

    ``nargs`` lets a command take several values of an option (``{"delta": "+"}``).
    """
    defaults, helps, nargs = defaults or {}, helps or {}, nargs or {}
    wanted = set(names)
    groups: dict[str, argparse._ArgumentGroup] = {}
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for option in table.OPTIONS.values():
        if option.name not in wanted:
            continue
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(table.GROUPS[option.group])
        target: Any = groups[option.group]
        if option.exclusive is not None:
            if option.exclusive not in exclusive:
                exclusive[option.exclusive] = target.add_mutually_exclusive_group()
            target = exclusive[option.exclusive]
        kwargs = argument(option, defaults.get(option.name), helps.get(option.name))
        if option.name in nargs:
            kwargs["nargs"] = nargs[option.name]
        target.add_argument(option.cli_flag, **kwargs)


def option_values(args: argparse.Namespace, *groups: str) -> dict[str, Any]:
    """The values of the table options of ``groups`` that ``args`` holds, by parameter name."""
    return {o.name: getattr(args, o.name) for o in table.in_group(*groups) if hasattr(args, o.name)}


def names_in(*groups: str) -> list[str]:
    """The names of the table options of ``groups``."""
    return [o.name for o in table.in_group(*groups)]


def add_command(sub: Any, func: Callable[[argparse.Namespace], int], **kwargs: Any) -> Any:
    """Add the subcommand that ``func`` (``cmd_<name>``) runs; its docstring is the help.

    The first line of the docstring is the one-line help of ``sai-attack --help``, the rest the
    description of ``sai-attack <name> --help``.
    """
    name = func.__name__.removeprefix("cmd_").replace("_", "-")
    summary, _, description = inspect.getdoc(func).partition("\n")
    text = textwrap.fill(" ".join(description.split()), width=79, break_on_hyphens=False)
    parser = sub.add_parser(name, help=summary.rstrip("."), description=text, **kwargs)
    parser.set_defaults(func=func)
    return parser


def add_argument(parser: Any, option: Option, **overrides: Any) -> None:
    """Add a command's own option (not in the table) with the table's parsing and checks."""
    parser.add_argument(option.cli_flag, **{**argument(option), **overrides})
