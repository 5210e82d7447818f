"""The output-folder lock: one writer per run folder at a time."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sai_attack.runtime import RunError

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """A lock file holding the owner's PID; a dead owner's lock is taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.acquired = False

    def __enter__(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunError(
                        f"output folder {str(self.path.parent)!r} is in use by process {pid} "
                        f"(lock file {self.path.name}); wait for it or use another output folder"
                    ) from None
                logger.warning("taking over stale lock %s (process %s is gone)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.acquired = True
            return self
        raise RunError(f"cannot acquire lock {str(self.path)!r}")

    def __exit__(self, *exc: object) -> None:
        if self.acquired:
            self.path.unlink(missing_ok=True)
            self.acquired = False
