"""The `runlane token` command: a read-only, expiring token for a browser (POST /v1/tokens)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from runlane.cli import output
from runlane.cli.commands import Cli, client_command

if TYPE_CHECKING:
    from runlane.cli import AddCommand

MAX_TTL_S = 86_400


def ttl(text: str) -> int:
    """An argparse type: a duration (`90s`, `30m`, `1h`, or plain seconds) of 1 s to 24 h."""
    try:
        seconds = output.parse_duration(text, "s")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= seconds <= MAX_TTL_S or seconds != int(seconds):
        raise argparse.ArgumentTypeError(
            f"not a ttl: {text!r} (whole seconds from 1s to 24h, e.g. 90s, 30m, 1h)"
        )
    return int(seconds)


def cmd_token(args: argparse.Namespace, cli: Cli) -> int:
    made = cli.client.scoped_token(runs=args.run, queue=args.queue, ttl_s=args.ttl)
    cli.show(made, lambda: f"{made['token']}\nexpires {made['expires_at']}")
    return 0


def register(command: AddCommand) -> None:
    token = client_command(
        command,
        "token",
        cmd_token,
        "make a read-only token for a browser: good only to read the runs named (or a queue's "
        "runs), their events and tails, until it expires",
        "runlane token --run 5f0c… --ttl 1h",
        "runlane token --run ID --run ID2 --ttl 10m",
        "runlane token --queue reports --ttl 30m --json",
    )
    scope = token.add_mutually_exclusive_group(required=True)
    scope.add_argument("--run", action="append", metavar="RUN_ID", help="a run (repeatable)")
    scope.add_argument("--queue", metavar="QUEUE", help="every run of this queue")
    token.add_argument(
        "--ttl", type=ttl, default=3600, metavar="DURATION", help="how long it is good (1h)"
    )
