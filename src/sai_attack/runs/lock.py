"""The output-folder lock: one writer per run folder at a time.

The lock is an advisory ``flock`` on ``DIR/.lock``, taken without waiting: the kernel grants it
to exactly one process and releases it when that process ends, however it ends (SIGKILL
included), so there is no stale-lock takeover to race on and no PID to trust. The file holds
the owner's PID only so that the refusal can name it. The owner deletes the file while still
holding the lock; a process that opened the old file meanwhile notices (the path no longer
names the file it locked) and starts over.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from sai_attack.runtime import RunError

logger = logging.getLogger(__name__)

_ATTEMPTS = 50


def _owner(fd: int) -> int | None:
    """The PID written in a lock file, when it is a plausible one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


class RunLock:
    """An exclusive lock on a run folder, held from ``__enter__`` to ``__exit__``.

    Raises:
        RunError: On ``__enter__``, when another process holds the lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def acquired(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> RunLock:
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _owner(fd)
                os.close(fd)
                who = f"process {pid}" if pid is not None else "another process"
                raise RunError(
                    f"output folder {str(self.path.parent)!r} is in use by {who} "
                    f"(lock file {self.path.name}); wait for it or use another output folder"
                ) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # the previous owner deleted it meanwhile
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return self
        raise RunError(f"cannot acquire lock {str(self.path)!r}")

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # still locked: nobody can take the old file
            os.close(self._fd)
            self._fd = None
