"""The `runlane` command: the Procfile entry points, `dev` (the whole stack in the foreground) and
a small HTTP client for runs and queues."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import ConfigError, Settings

if TYPE_CHECKING:
    from app.client import Client

ROOT = Path(__file__).resolve().parent.parent
STACK = ("web", "worker", "relay", "scheduler")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args) or 0)
    except ConfigError as exc:
        print(f"runlane: {exc}", file=sys.stderr)
        return 2


# --- Procfile entry points -------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from app import db

    settings = Settings.from_env()
    if not settings.database_url:
        raise ConfigError("DATABASE_URL must be set (scripts/run sets it for its children)")
    applied = db.migrate(settings.database_url)
    if applied:
        print("applied migrations: " + ", ".join(f"{v:04d}" for v in applied))
    else:
        print("schema is up to date")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from app import logs
    from workers import relay

    logs.configure()
    relay.main(Settings.from_env())
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from app import logs
    from workers import scheduler

    logs.configure()
    scheduler.main(Settings.from_env())
    return 0


# --- runlane dev -----------------------------------------------------------------------------


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


# --- HTTP client commands --------------------------------------------------------------------


def _client() -> Client:
    from app.client import Client

    port = os.environ.get("PORT") or "8000"
    base_url = os.environ.get("RUNLANE_URL") or f"http://127.0.0.1:{port}"
    return Client(base_url, _token())


def _token() -> str:
    token = os.environ.get("RUNLANE_TOKEN")
    if token:
        return token
    # Read, never create: a token made up here would not match the server's.
    path = Path(os.environ.get("RUNLANE_HOME") or ".runlane").absolute() / "dev-token"
    if not path.exists():
        raise ConfigError(f"set RUNLANE_TOKEN (no dev token at {path})")
    return path.read_text().strip()


def _calling(call: Callable[[Client], Any]) -> int:
    """Run one client call, print its JSON; an HTTP error prints the problem's detail."""
    from app.client import ApiError

    try:
        result = call(_client())
    except (ApiError, OSError) as exc:  # OSError: the server cannot be reached
        print(f"runlane: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.input) if args.input is not None else None
    except json.JSONDecodeError as exc:
        print(f"runlane: --input is not JSON: {exc}", file=sys.stderr)
        return 2
    options = {
        "queue": args.queue,
        "priority": args.priority,
        "delay_ms": args.delay_ms,
        "max_attempts": args.max_attempts,
    }
    fields = {key: value for key, value in options.items() if value is not None}
    return _calling(
        lambda c: c.submit(args.task, payload, idempotency_key=args.idempotency_key, **fields)
    )


def cmd_get(args: argparse.Namespace) -> int:
    return _calling(lambda c: c.get(args.run_id))


def cmd_cancel(args: argparse.Namespace) -> int:
    return _calling(lambda c: c.cancel(args.run_id))


def cmd_retry(args: argparse.Namespace) -> int:
    return _calling(lambda c: c.retry(args.run_id))


def cmd_queues(args: argparse.Namespace) -> int:
    return _calling(lambda c: c.queues())


def cmd_pause(args: argparse.Namespace) -> int:
    return _calling(lambda c: c.pause(args.queue))


def cmd_resume(args: argparse.Namespace) -> int:
    return _calling(lambda c: c.resume(args.queue))


def cmd_tail(args: argparse.Namespace) -> int:
    """Exits 0 when the run succeeded, 1 when it failed or was cancelled, so scripts can wait on
    a run with it."""
    from app.client import ApiError, render_tail

    try:
        last = render_tail(_client().tail(args.run_id, after=args.after), sys.stdout)
    except (ApiError, OSError) as exc:  # OSError includes ConnectionError: gave up reconnecting
        print(f"runlane: {exc}", file=sys.stderr)
        return 1
    return 0 if last is not None and last["type"] == "run.succeeded" else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runlane", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.set_defaults(command=func)
        return cmd

    dev = command("dev", cmd_dev, "run the whole stack in the foreground (what scripts/run does)")
    dev.add_argument("--workers", type=int, default=1, help="rq worker processes (default 1)")
    command("migrate", cmd_migrate, "apply pending database migrations (Procfile release)")
    command("relay", cmd_relay, "publish the event outbox to Redis (Procfile relay)")
    command("scheduler", cmd_scheduler, "fire schedules and due delayed runs (Procfile scheduler)")

    submit = command("submit", cmd_submit, "submit a run")
    submit.add_argument("task")
    submit.add_argument("--input", help="the run's input, as JSON")
    submit.add_argument("--queue")
    submit.add_argument("--priority", type=int)
    submit.add_argument("--delay-ms", type=int)
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--idempotency-key")
    for name, func, help in (
        ("get", cmd_get, "show a run"),
        ("cancel", cmd_cancel, "cancel a run"),
        ("retry", cmd_retry, "retry a failed or cancelled run"),
    ):
        command(name, func, help).add_argument("run_id", metavar="RUN_ID")
    tail = command("tail", cmd_tail, "follow a run's events until it ends (exit 0: it succeeded)")
    tail.add_argument("run_id", metavar="RUN_ID")
    tail.add_argument("--after", type=int, default=0, help="start after this event seq")
    command("queues", cmd_queues, "list queues with their counts")
    for name, func, help in (
        ("pause", cmd_pause, "hold your runs in a queue (running attempts finish)"),
        ("resume", cmd_resume, "let a paused queue's runs start again"),
    ):
        command(name, func, help).add_argument("queue", metavar="QUEUE")
    return parser


if __name__ == "__main__":
    sys.exit(main())
