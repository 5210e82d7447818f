"""The ``sai-attack`` command line.

Exit codes (:data:`sai_attack.runtime.EXIT_CODES`): 0 everything processed; 3 finished but some
inputs were skipped (see the status column of ``results.csv``); 2 usage error (bad option or
parameter, nothing done); 1 the run could not proceed (output folder locked or unwritable);
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from sai_attack.cli import attack, bench, detect, evaluate, reproduce
from sai_attack.runtime import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    RunError,
)

COMMAND_MODULES = (attack, evaluate, detect, reproduce, bench)
"""Modules whose ``register(subparsers)`` adds their subcommands, in ``--help`` order."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="sai-attack",
        description="Superpixel-guided attentional adversarial attacks (Dong et al., CVPR 2020) "
        "and their evaluation.",
        epilog="Exit codes: " + ", ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    from sai_attack import __version__

    parser.add_argument("--version", action="version", version=f"sai-attack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sai-attack: %(message)s"))
    root = logging.getLogger("sai_attack")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished work is kept and the run can resume."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    from sai_attack.parallel import shutdown

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    clean = False
    try:
        code = int(args.func(args))
        clean = True
        return code
    except (ValueError, FileNotFoundError, ImportError) as exc:
        # Bad parameters, unknown models, unusable weights or labels files: nothing was done.
        print(f"sai-attack: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RunError, OSError) as exc:
        print(f"sai-attack: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"sai-attack: {how}; re-run the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        shutdown(clean)


if __name__ == "__main__":
    sys.exit(main())
