"""`runlane dev`: embedded servers, migrations, then the Procfile's processes in the foreground
until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import ConfigError, Settings

if TYPE_CHECKING:
    from app.cli import AddCommand

ROOT = Path(__file__).resolve().parent.parent.parent
STACK = ("web", "worker", "relay", "scheduler")



class Stopped(Exception):
    """SIGINT or SIGTERM arrived before the process manager took over the signals."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.returncode = 128 + signum


class _Signals:
    """Turns SIGINT/SIGTERM into Stopped, held back while servers start so none is left behind
    half-started (blocking the signals instead would leak the mask into the servers)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.holding = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = signum
        else:
            raise Stopped(signum)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            raise Stopped(self.pending)

    def ignore(self) -> None:
        """For the final shutdown: a second Ctrl-C must not cut the servers' stop short."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def cmd_dev(args: argparse.Namespace) -> int:
    from app.embedded import EmbeddedServers

    # pgserver's lock folder falls back to /tmp without XDG_RUNTIME_DIR, which is fine here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    settings = Settings.from_env()
    signals = _Signals()
    servers = EmbeddedServers(settings.home)
    try:
        with signals.held():
            servers.start(redis=not settings.redis_url, postgres=not settings.database_url)
        env = _stack_env(
            settings,
            settings.redis_url or servers.redis_url,
            settings.database_url or servers.database_url,
        )
        _announce(settings)
        procfile = _procfile()
        release = subprocess.run(procfile["release"], shell=True, env=env, cwd=ROOT, check=False)
        if release.returncode != 0:
            print(f"runlane dev: release failed (rc={release.returncode})", file=sys.stderr)
            return release.returncode
        return _run_stack(procfile, env, workers=args.workers)
    except Stopped as stop:
        return stop.returncode
    finally:
        signals.ignore()
        servers.stop()


def _stack_env(settings: Settings, redis_url: str, database_url: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # runlane, gunicorn and rq live beside python
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PORT": str(settings.port),
        "RUNLANE_HOME": str(settings.home),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
    }


def _procfile() -> dict[str, str]:
    from honcho.environ import parse_procfile

    path = ROOT / "Procfile"
    if not path.exists():
        raise ConfigError(f"no Procfile at {path}: runlane dev runs from a checkout")
    return dict(parse_procfile(path.read_text()).processes)


def _announce(settings: Settings) -> None:
    base = f"http://127.0.0.1:{settings.port}"
    print(f"runlane dev: listening on {base}, data in {settings.home}", flush=True)
    if not settings.dev_mode:
        return
    from app.config import dev_token

    token = dev_token(settings.home)
    body = json.dumps({"task": "demo.echo", "input": {"hello": "world"}})
    curl = shlex.join(
        ["curl", "-s", "-X", "POST", f"{base}/v1/runs",
         "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
         "-H", "Idempotency-Key: hello-1", "-d", body]
    )  # fmt: skip
    print(f"runlane dev: dev token (tenant 'dev'): {token}\nrunlane dev: try\n  {curl}", flush=True)


def _run_stack(procfile: dict[str, str], env: dict[str, str], *, workers: int) -> int:
    """The long-running processes under honcho; it stops them all (SIGTERM, then SIGKILL after
    a grace period) when a signal arrives or any one of them exits."""
    from honcho.environ import expand_processes
    from honcho.manager import Manager
    from honcho.printer import Printer

    manager = Manager(Printer(sys.stdout))
    processes = {name: procfile[name] for name in STACK}
    for proc in expand_processes(processes, concurrency={"worker": workers}):
        # exec: the signal reaches the program itself and its exit code is the one reported.
        cmd = f"exec {proc.cmd}"
        manager.add_process(proc.name, cmd, env={**env, **proc.env}, cwd=str(ROOT))
    manager.loop()
    # Honcho reports 130/143 after SIGINT/SIGTERM and a child's code when one died; a child that
    # exited 0 on its own is still a failure of the stack.
    return manager.returncode or 1


def register(command: AddCommand) -> None:
    dev = command("dev", cmd_dev, "run the whole stack in the foreground (what scripts/run does)")
    dev.add_argument("--workers", type=int, default=1, help="rq worker processes (default 1)")
