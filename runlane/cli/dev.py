"""`runlane dev`: embedded servers, migrations, then the Procfile's processes in the foreground
until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import ConfigError, Settings
from runlane.cli import preflight
from runlane.cli.supervise import Supervisor

if TYPE_CHECKING:
    from runlane.cli import AddCommand

ROOT = Path(__file__).resolve().parent.parent.parent
STACK = ("web", "worker", "relay", "scheduler", "webhooks")
READY_WAIT_S = 60.0


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
    from runlane.embedded import EmbeddedServers

    # pgserver's lock folder falls back to /tmp without XDG_RUNTIME_DIR, which is fine here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    settings = Settings.from_env()
    procfile = _procfile()
    lock = preflight.StackLock(settings.home)
    lock.acquire(settings.port)
    try:
        preflight.check_port(settings.bind_host, settings.port)
        preflight.check_task_modules(settings)
        return _serve(settings, procfile, EmbeddedServers(settings.home), workers=args.workers)
    finally:
        lock.release()


def _serve(settings: Settings, procfile: dict[str, str], servers: Any, *, workers: int) -> int:
    signals = _Signals()
    try:
        with signals.held():
            servers.start(redis=not settings.redis_url, postgres=not settings.database_url)
        env = _stack_env(
            settings,
            settings.redis_url or servers.redis_url,
            settings.database_url or servers.database_url,
        )
        release = subprocess.run(procfile["release"], shell=True, env=env, cwd=ROOT, check=False)
        if release.returncode != 0:
            print(f"runlane dev: release failed (rc={release.returncode})", file=sys.stderr)
            return release.returncode
        with _metrics_folder(settings):
            return _run_stack(settings, procfile, env, workers=workers)
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
        "PROMETHEUS_MULTIPROC_DIR": str(_metrics_dir(settings)),
    }


def _metrics_dir(settings: Settings) -> Path:
    """The folder every process of the stack writes its metrics to, which the web's /metrics
    adds up: PROMETHEUS_MULTIPROC_DIR if given, else one of this stack's own."""
    return settings.metrics_dir or settings.home / "metrics" / f"stack-{os.getpid()}"


@contextmanager
def _metrics_folder(settings: Settings) -> Iterator[Path]:
    """A stack's own folder starts empty (values of an earlier stack would be added in) and goes
    with the stack; one given by PROMETHEUS_MULTIPROC_DIR is left as it is."""
    folder = _metrics_dir(settings)
    if settings.metrics_dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if settings.metrics_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _procfile() -> dict[str, str]:
    from honcho.environ import parse_procfile

    path = ROOT / "Procfile"
    if not path.exists():
        raise ConfigError(f"no Procfile at {path}: runlane dev runs from a checkout")
    return dict(parse_procfile(path.read_text()).processes)


def _announce_when_up(settings: Settings, supervisor: Supervisor) -> None:
    """Says "listening" once the web process answers, not before (it may take a few seconds)."""
    base = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        supervisor.say(f"the web process did not answer on {base} within {READY_WAIT_S:g} s")
        return
    supervisor.say(f"listening on {base}, data in {settings.home}")
    supervisor.say(f"dashboard: {base}/ui (sign in with an API token)")
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
    supervisor.say(f"dev token (tenant 'dev'): {token}")
    supervisor.say(f"try: {curl}")


def forget_live_gauges(folder: str) -> Callable[[int], None]:
    """What the supervisor does with each process that ended: its live gauges leave the sums of
    the shared folder (its counters and histograms stay counted)."""
    from prometheus_client import multiprocess

    return lambda pid: multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


def _run_stack(
    settings: Settings, procfile: dict[str, str], env: dict[str, str], *, workers: int
) -> int:
    """The long-running processes under the supervisor, which restarts one that dies and stops
    them all (SIGTERM, then SIGKILL after a grace period) on a signal or a crash loop."""
    from honcho.environ import expand_processes
    from honcho.printer import Printer

    supervisor = Supervisor(
        Printer(sys.stdout), on_death=forget_live_gauges(env["PROMETHEUS_MULTIPROC_DIR"])
    )
    processes = {name: procfile[name] for name in STACK}
    for proc in expand_processes(processes, concurrency={"worker": workers}):
        # exec: the signal reaches the program itself and its exit code is the one reported.
        supervisor.add(proc.name, f"exec {proc.cmd}", {**env, **proc.env}, str(ROOT))
    threading.Thread(
        target=_announce_when_up, args=(settings, supervisor), name="announce", daemon=True
    ).start()
    return supervisor.loop()


def register(command: AddCommand) -> None:
    dev = command("dev", cmd_dev, "run the whole stack in the foreground (what scripts/run does)")
    dev.add_argument("--workers", type=int, default=1, help="rq worker processes (default 1)")
