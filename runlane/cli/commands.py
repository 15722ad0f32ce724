"""The client commands for runs (get, list, events, tail, cancel, retry; submit is in
runlane.cli.flows), and what every client command shares: printing a human view or the API's
JSON, parsing option values, and turning API errors into messages and exit codes (1 API, 2 usage
or configuration)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runlane.cli import client_options, output

if TYPE_CHECKING:
    from runlane.cli import AddCommand, Handler
    from runlane.client import ApiError, Client

STATUSES = ("waiting", "queued", "delayed", "running", "succeeded", "failed", "cancelled")
EVENTS_PAGE = 1000  # the API's default and largest page of events
INPUT_HELP = "JSON, - to read it from stdin, or @FILE to read a file"


@dataclass
class Cli:
    """What a client command works with: the client, and how to print."""

    client: Client
    json: bool
    style: output.Style

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Cli:
        """ConfigError (exit 2) if no token is to be found or the URL is no http(s) URL."""
        from runlane.client import Client

        client = Client.from_env(getattr(args, "url", None), getattr(args, "token", None), env)
        return cls(client, bool(getattr(args, "json", False)), output.Style.for_stream(sys.stdout))

    def show(self, body: Any, human: Callable[[], str]) -> None:
        """The API's JSON with --json, else the human view (nothing at all if it is empty)."""
        text = json.dumps(body, indent=2, ensure_ascii=False) if self.json else human()
        if text:
            print(text, flush=True)

    def now(self) -> datetime:
        return datetime.now(UTC)


def guarded(func: Callable[[argparse.Namespace, Cli], int]) -> Handler:
    """A client command whose API errors and unreachable server become a message and exit 1."""
    from runlane.client import ApiError, Unreachable

    def handler(args: argparse.Namespace) -> int:
        cli = Cli.from_args(args)
        try:
            return func(args, cli)
        except ApiError as exc:
            _say(*problem_lines(exc, cli.client.token_from))
        except Unreachable as exc:
            _say(
                str(exc),
                "  is the stack running (scripts/run)? else point --url or RUNLANE_URL at it",
            )
        except BrokenPipeError:  # the reader went away (`runlane list | head`): nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

    return handler


def problem_lines(exc: ApiError, token_from: str) -> list[str]:
    """The problem's title and detail, then each offending field on a line of its own."""
    lines = [str(exc)] + [f"  {name}: {message}" for name, message in exc.fields]
    if exc.status == 401:
        lines.append(f"  the token came from {token_from}")
    return lines


def _say(*lines: str) -> None:
    print("runlane: " + "\n".join(lines), file=sys.stderr, flush=True)


def hint(text: str) -> None:
    """A pointer for people (the next page, the next command): on stderr, never in the data."""
    print(text, file=sys.stderr, flush=True)


# --- option values: syntax is checked here (exit 2); the server judges the values (exit 1) ---


def json_value(text: str) -> Any:
    """JSON given inline, `-` for stdin, `@FILE` for a file."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def json_object(text: str) -> dict[str, Any]:
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"team": "ops"}\'')
    return value


def duration(plain: str) -> Callable[[str], float]:
    """An argparse type: seconds in `30s`, `5m`, `1500ms`...; a bare number is in unit `plain`."""

    def parse(text: str) -> float:
        try:
            return output.parse_duration(text, plain)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "duration"  # named in argparse's "invalid duration value" message
    return parse


def backoff(text: str) -> dict[str, Any]:
    """`exponential:500ms`, `fixed:2s:0.5` (TYPE:DELAY[:JITTER]) or a JSON object."""
    if text.lstrip().startswith("{"):
        return json_object(text)
    kind, _, rest = text.partition(":")
    delay, _, jitter = rest.partition(":")
    if not kind or not delay:
        raise argparse.ArgumentTypeError("give TYPE:DELAY[:JITTER], e.g. exponential:500ms:0.2")
    policy: dict[str, Any] = {"type": kind, "delay_ms": round(duration("ms")(delay) * 1000)}
    if jitter:
        try:
            policy["jitter"] = float(jitter)
        except ValueError:
            raise argparse.ArgumentTypeError(f"jitter must be a number, not {jitter!r}") from None
    return policy


def rfc3339(text: str) -> str:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time with a zone: {text!r} (e.g. 2030-01-01T09:00:00Z)"
        )
    return text


# --- the run commands ---------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace, cli: Cli) -> int:
    from runlane.cli import flows  # it imports this module

    run = cli.client.get(args.run_id)
    cli.show(run, lambda: flows.run_view(run, cli))
    return 0


FLAG_OF = {"parent_id": "parent"}  # list filters whose option is not named as the parameter


def cmd_list(args: argparse.Namespace, cli: Cli) -> int:
    filters = {"status": args.status, "queue": args.queue, "task": args.task,
               "parent_id": args.parent, "limit": args.limit}  # fmt: skip
    if args.all:
        items = list(cli.client.list_all(**filters, cursor=args.cursor))
        page: dict[str, Any] = {"items": items, "next_cursor": None}
    else:
        page = cli.client.list(**filters, cursor=args.cursor)
    cli.show(page, lambda: output.run_table(page["items"], cli.now(), cli.style) or "no runs")
    if page.get("next_cursor") and not cli.json:
        flags = "".join(
            f" --{FLAG_OF.get(name, name)} {value}" for name, value in filters.items() if value
        )
        hint(f"next: runlane list{flags} --cursor {page['next_cursor']}")
    return 0


def cmd_events(args: argparse.Namespace, cli: Cli) -> int:
    items = cli.client.events(args.run_id, after=args.after, limit=args.limit)
    cli.show(
        {"items": items},
        lambda: "\n".join(map(output.event_line, items)) or f"no events after #{args.after}",
    )
    if items and len(items) == (args.limit or EVENTS_PAGE) and not cli.json:
        hint(f"next: runlane events {args.run_id} --after {items[-1]['seq']}")
    return 0


def cmd_tail(args: argparse.Namespace, cli: Cli) -> int:
    """Exits 0 when the run succeeded, 1 when it failed or was cancelled, so scripts can wait on
    a run with it."""
    cli.client.get(args.run_id)  # an unknown run, a bad token or no server: said at once
    events = cli.client.tail(args.run_id, after=args.after)
    if cli.json:
        last = None
        for last in events:
            print(json.dumps(last, ensure_ascii=False), flush=True)  # one event per line
    else:
        last = output.render_tail(events, sys.stdout, cli.style)
    if last is None:  # it had ended already, at or before --after
        run = cli.client.get(args.run_id)
        if not cli.json:
            print(f"run already {cli.style.status(run['status'])}; no events after #{args.after}")
        return 0 if run["status"] == "succeeded" else 1
    return 0 if last["type"] == "run.succeeded" else 1


def cmd_cancel(args: argparse.Namespace, cli: Cli) -> int:
    run = cli.client.cancel(args.run_id)
    cli.show(run, lambda: output.changed("cancel", run, cli.style))
    return 0


def cmd_retry(args: argparse.Namespace, cli: Cli) -> int:
    run = cli.client.retry(args.run_id)
    cli.show(run, lambda: output.changed("retry", run, cli.style))
    return 0


def client_command(
    command: AddCommand,
    name: str,
    func: Callable[[argparse.Namespace, Cli], int],
    help: str,
    *examples: str,
) -> argparse.ArgumentParser:
    """A client command: guarded, with the server/output options, and its examples as epilog."""
    lines = "\n".join(f"  {example}" for example in examples)
    return command(
        name,
        guarded(func),
        help,
        parents=[client_options(subcommand=True)],
        epilog=f"examples:\n{lines}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def client_action(
    actions: Any, name: str, func: Callable[[argparse.Namespace, Cli], int], help: str
) -> argparse.ArgumentParser:
    """An action of a client command with actions (`runlane schedules create`): guarded, with
    the server/output options again. `actions` is the command's add_subparsers()."""
    parser: argparse.ArgumentParser = actions.add_parser(
        name, help=help, description=help, parents=[client_options(subcommand=True)]
    )
    parser.set_defaults(command=guarded(func))
    return parser


def register(command: AddCommand) -> None:
    from runlane.cli import flows  # it imports this module

    submit = client_command(
        command,
        "submit",
        flows.cmd_submit,
        "submit a run of a task, a flow (a run that waits for its children) or a batch of runs",
        'runlane submit demo.echo --input \'{"hello": "world"}\'',
        "runlane submit demo.sleep --input '{\"seconds\": 2}' --delay 5m --priority 1 -q",
        "echo '{\"steps\": 5}' | runlane submit demo.progress --input - --key order-42",
        "runlane submit demo.collect --child demo.echo:'{\"n\": 1}' --child demo.noop",
        "runlane submit --batch runs.jsonl --json",
    )
    flows.submit_options(submit)
    get = client_command(command, "get", cmd_get, "show a run", "runlane get RUN_ID --json")
    get.add_argument("run_id", metavar="RUN_ID", help="the run's id")
    listing = client_command(
        command,
        "list",
        cmd_list,
        "list your runs, newest first",
        "runlane list --status failed --queue emails",
        "runlane list --all --json",
    )
    _list_options(listing)
    events = client_command(
        command,
        "events",
        cmd_events,
        "print a run's events so far",
        "runlane events RUN_ID --after 3 --limit 10",
    )
    events.add_argument("run_id", metavar="RUN_ID", help="the run's id")
    events.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="SEQ",
        help="only events after this seq (default 0: from the start)",
    )
    events.add_argument("--limit", type=int, metavar="N", help="at most N events (default 1000)")
    tail = client_command(
        command,
        "tail",
        cmd_tail,
        "follow a run's events live until it ends (exit 0 if it succeeded, else 1)",
        "runlane tail RUN_ID",
        "runlane tail RUN_ID --after 5 --json",
    )
    tail.add_argument("run_id", metavar="RUN_ID", help="the run's id")
    tail.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="SEQ",
        help="start after this event seq (default 0: the whole history first)",
    )
    for name, func, help in (
        ("cancel", cmd_cancel, "cancel a run (a running attempt is asked to stop)"),
        ("retry", cmd_retry, "retry a failed or cancelled run, with a fresh attempt budget"),
    ):
        cmd = client_command(command, name, func, help, f"runlane {name} RUN_ID")
        cmd.add_argument("run_id", metavar="RUN_ID", help="the run's id")


def _list_options(listing: argparse.ArgumentParser) -> None:
    add = listing.add_argument
    add("--status", choices=STATUSES, help="only runs in this status")
    add("--queue", metavar="QUEUE", help="only runs of this queue")
    add("--task", metavar="TASK", help="only runs of this task")
    add("--parent", metavar="RUN_ID", help="only the children of this flow's run")
    add("--limit", type=int, metavar="N", help="runs per page, 1..200 (default 50)")
    add("--cursor", metavar="CURSOR", help="the page after this one (printed as the next: hint)")
    add("--all", action="store_true", help="follow the pages to the end and print every run")
