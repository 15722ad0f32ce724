"""What `runlane dev` checks before it starts anything: that no other stack runs from the same
home, that the web port is free and that the task modules import. Each failure is one clear
line and a non-zero exit, with nothing started or stopped."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import traceback
from pathlib import Path

from app.config import ConfigError, Settings


class StackLock:
    """An exclusive lock on RUNLANE_HOME for the life of a dev stack. The kernel drops it when the
    holder dies, so a stack killed with SIGKILL never leaves a stale lock behind."""

    def __init__(self, home: Path) -> None:
        self.path = home / "stack.lock"
        self._fd: int | None = None

    def acquire(self, port: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise ConfigError(
                f"a runlane stack already runs from {self.path.parent}, "
                f"pid {holder.get('pid', '?')}, port {holder.get('port', '?')}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "port": port}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def _holder(text: str) -> dict[str, object]:
    with contextlib.suppress(ValueError):
        found = json.loads(text)
        if isinstance(found, dict):
            return found
    return {}


def check_port(host: str, port: int) -> None:
    """Refuse a port another program listens on, before gunicorn retries it and gives up."""
    with socket.socket() as sock:
        # as gunicorn binds: a port in TIME_WAIT is free, one with a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {host} is in use ({exc.strerror}): stop what listens there, "
                "or set PORT to another port"
            ) from None


def check_task_modules(settings: Settings) -> None:
    """Import the task modules here once, so a typo in RUNLANE_TASK_MODULES is one message
    instead of a traceback from every process of the stack."""
    from app import tasks

    try:
        tasks.load(settings.task_modules)
    except Exception as exc:
        # where in the user's module it failed: not the import machinery, not our own loader
        ours = (str(Path(tasks.__file__).parent), str(Path(__file__).parent.parent))
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if not f.filename.startswith(("<", *ours)) and "importlib" not in f.filename
        ]
        where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        raise ConfigError(
            f"RUNLANE_TASK_MODULES={','.join(settings.task_modules)}: "
            f"cannot load the tasks: {type(exc).__name__}: {exc}{where}"
        ) from None
