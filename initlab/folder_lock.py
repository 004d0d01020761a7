"""The lock of a results folder: at most one process writes it at a time (``initlab compare``).

A lock file holds its holder's pid and host, created atomically; a lock whose holder is
surely gone is taken over without ever removing a fresh one another process just took.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from pathlib import Path

from initlab.errors import InitlabError

#: The lock file of a results folder that a process is writing (``initlab compare``).
LOCK_NAME = ".lock"
#: An empty lock file older than this is a crash between creating it and writing it.
_EMPTY_LOCK_GRACE_S = 10.0


def _lock_text() -> str:
    """What a lock file holds: the holder's pid and host (JSON)."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n"


class FolderLock:
    """``<folder>/.lock``: at most one process writes a results folder at a time.

    The file is created with ``O_CREAT | O_EXCL`` (atomic, also over NFS v3+) and holds the
    holder's pid and host. A lock whose pid is not alive on this host is stale (a killed
    process) and is taken over; a lock held on another host cannot be checked and is
    respected. Use as a context manager, or :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise an :class:`InitlabError` naming the holder."""
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                seen = _read(self.path)
                if seen is None or not _stale(self.path, seen):
                    raise InitlabError(self._busy(seen)) from None
                _take_over(self.path, seen)
                continue
            except OSError as err:
                raise InitlabError(f"cannot lock {self.path.parent}: {err.strerror}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as lock:
                lock.write(_lock_text())
            self.held = True
            return
        raise InitlabError(f"cannot lock {self.path.parent}: its lock file keeps changing")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held and _read(self.path) == _lock_text():
            self.path.unlink(missing_ok=True)
        self.held = False

    def _busy(self, seen: str | None) -> str:
        holder = _holder(seen or "")
        who = f"initlab pid {holder[0]} on {holder[1]}" if holder else "another process"
        return (f"{self.path.parent} is in use by {who} (lock file {self.path}); wait for it to finish, "
                "or delete the lock file if that process is gone")

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _holder(text: str) -> tuple[int, str] | None:
    try:
        data = json.loads(text)
        return int(data["pid"]), str(data["host"])
    except (ValueError, KeyError, TypeError):
        return None


def _stale(path: Path, text: str) -> bool:
    """Whether the lock's holder is surely gone: a dead pid on this host, or an old empty file."""
    holder = _holder(text)
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _EMPTY_LOCK_GRACE_S
        except FileNotFoundError:
            return True
    pid, host = holder
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _take_over(path: Path, seen: str) -> None:
    """Remove the stale lock ``seen`` without ever removing a fresh one another process just took.

    The lock is renamed aside (atomic: of two racing processes one gets it), and put back if
    what was moved is not the stale lock that was judged.
    """
    aside = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process took it over first
        return
    if _read(aside) != seen:
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)
