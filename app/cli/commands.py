"""The HTTP client commands: runs, events, tails, queues."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import ConfigError

if TYPE_CHECKING:
    from app.cli import AddCommand
    from app.client import Client


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


def register(command: AddCommand) -> None:
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
