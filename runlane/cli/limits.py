"""The `runlane limits` command: show or change a queue's limits (concurrency and rate, in all
and per limit key), with the parsing of its option values and its human view."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from runlane.cli import output
from runlane.cli.commands import Cli, client_command

if TYPE_CHECKING:
    from runlane.cli import AddCommand

FIELDS = ("concurrency", "rate", "key_concurrency", "key_rate")
NO_LIMITS: dict[str, Any] = dict.fromkeys(FIELDS)
REMOVE = "none"


# --- option values ------------------------------------------------------------------------------


def count(text: str) -> int | None:
    """An argparse type: a whole number of at least 1, or `none` (None: remove the limit)."""
    if text.strip().lower() == REMOVE:
        return None
    # Digits only: int() would also take `+3`, `1_000` and ` 3`, which nobody means here.
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"not a limit: {text!r} (give a whole number of at least 1, or none to remove it)"
        )
    return int(text)


def rate(text: str) -> dict[str, Any] | None:
    """An argparse type: `N/PERIOD`, N starts per PERIOD (seconds, or 500ms, 1m, 1h; a bare unit
    is one of it: 10/s), as the API's {"limit", "period_s"}; `none` (None) to remove it."""
    if text.strip().lower() == REMOVE:
        return None
    limit, slash, period = text.strip().lower().partition("/")
    problem = f"not a rate: {text!r} (give N/SECONDS, e.g. 10/1, 10/1.5, 100/1m, or none)"
    if not slash or not re.fullmatch(r"[0-9]+", limit):
        raise argparse.ArgumentTypeError(problem)
    if int(limit) < 1:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (N must be at least 1)")
    try:
        period_s = output.parse_duration("1" + period if period in output.UNITS_S else period, "s")
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if period_s <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (the period must be over 0)")
    return {"limit": int(limit), "period_s": period_s}


# --- the command --------------------------------------------------------------------------------


def cmd_limits(args: argparse.Namespace, cli: Cli) -> int:
    # The options default to SUPPRESS, so an option not given is absent here while `none` is
    # None: the server keeps the limits a PUT leaves out and removes the ones sent as null.
    changes = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    queue = cli.client.set_limits(args.queue, **changes) if changes else find(cli, args.queue)
    cli.show(queue, lambda: limits_block(queue.get("limits")))
    return 0


def find(cli: Cli, name: str) -> dict[str, Any]:
    """The queue as GET /v1/queues lists it. The API lists every queue with runs, a pause, a live
    worker or limits, so one it does not list has none of them: shown so, not as an error."""
    for item in cli.client.queues()["items"]:
        if item["name"] == name:
            return dict(item)
    return {"name": name, "paused": False, "workers": 0, "counts": {}, "limits": NO_LIMITS}


def limits_block(limits: Any) -> str:
    """One line per limit: `concurrency      2`, `rate             10 per 1.5 s`, `... none`."""
    given = limits if isinstance(limits, dict) else {}
    return output.block((name, limit_text(given.get(name))) for name in FIELDS)


def limit_text(value: Any) -> str:
    if value is None:
        return REMOVE
    if isinstance(value, dict):
        period = float(value.get("period_s") or 0)
        return f"{value.get('limit')} per {period:.15g} s"  # .15g: 60 s, not 60.0 s
    return str(value)


# --- registration -------------------------------------------------------------------------------


def register(command: AddCommand) -> None:
    limits = client_command(
        command,
        "limits",
        cmd_limits,
        "show or change a queue's limits: runs at once and starts per period, in all and per "
        "limit key (options not given stay as they are)",
        "runlane limits emails",
        "runlane limits emails --concurrency 2 --rate 10/1.5",
        "runlane limits emails --key-concurrency 1 --key-rate 100/1m",
        "runlane limits emails --rate none --json",
    )
    limits.add_argument("queue", metavar="QUEUE", help="the queue's name")
    per = "per SECONDS: 10/1, 10/1.5, or with a unit, 100/1m, 5/500ms"
    for flag, kind, metavar, what in (
        ("--concurrency", count, "N", "at most N of your runs in the queue run at once"),
        ("--rate", rate, "N/SECONDS", f"at most N of your runs in the queue start {per}"),
        ("--key-concurrency", count, "N", "as --concurrency, per limit key (submit --limit-key)"),
        ("--key-rate", rate, "N/SECONDS", "as --rate, per limit key"),
    ):
        help = f"{what}; none removes it"
        limits.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=help)
