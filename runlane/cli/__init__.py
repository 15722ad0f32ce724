"""The `runlane` command: the Procfile entry points, `dev` (the whole stack in the foreground) and
the HTTP client commands. Each submodule registers its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from app.config import ConfigError

Handler = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    def __call__(
        self, name: str, func: Handler, help: str, **kwargs: Any
    ) -> argparse.ArgumentParser: ...


DESCRIPTION = """\
runlane: durable jobs with BullMQ-style semantics behind an HTTP API.

The client commands (submit, get, list, ...) find the server the way the stack was started:
  server  --url, else $RUNLANE_URL, else http://127.0.0.1:$PORT (PORT defaults to 8000)
  token   --token, else $RUNLANE_TOKEN, else the dev token `runlane dev` wrote to
          $RUNLANE_HOME/dev-token (RUNLANE_HOME defaults to ./.runlane; it is read, never made)
They print a human view (colour on a terminal, none with NO_COLOR); --json prints the API's JSON.
--url, --token and --json go before or after the command."""

EPILOG = """\
exit codes: 0 done, 1 the API refused (its problem is printed) or the server could not be
reached, 2 a usage or configuration error, 130 interrupted (Ctrl-C).
`runlane COMMAND --help` shows a command's options and examples."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        return int(args.command(args) or 0)
    except ConfigError as exc:
        print(f"runlane: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # Ctrl-C: 128 + SIGINT, as shells report it, and no traceback


def parser() -> argparse.ArgumentParser:
    from runlane.cli import admin, commands, dev, entry, limits, token, webhooks

    root = argparse.ArgumentParser(
        prog="runlane",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[client_options(subcommand=False)],
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = root.add_subparsers(required=True, metavar="COMMAND", title="commands")

    def command(name: str, func: Handler, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help, **kwargs)
        cmd.set_defaults(command=func)
        return cmd

    dev.register(command)
    entry.register(command)
    commands.register(command)
    admin.register(command)
    limits.register(command)
    token.register(command)
    webhooks.register(command)
    return root


def client_options(*, subcommand: bool) -> argparse.ArgumentParser:
    """--url, --token, --json for the root parser, and again for each client command. There
    they default to SUPPRESS, so that a value given before the command name is not reset."""
    unset = argparse.SUPPRESS if subcommand else None
    parent = argparse.ArgumentParser(add_help=False)
    where = "before" if subcommand else "after"
    group = parent.add_argument_group(f"server and output (also accepted {where} the command)")
    group.add_argument(
        "--url",
        default=unset,
        metavar="URL",
        help="the server (default: $RUNLANE_URL, else http://127.0.0.1:$PORT, "
        "with PORT 8000 if unset)",
    )
    group.add_argument(
        "--token",
        default=unset,
        metavar="TOKEN",
        help="API token (default: $RUNLANE_TOKEN, else the dev token in "
        "$RUNLANE_HOME/dev-token, with RUNLANE_HOME ./.runlane if unset)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if subcommand else False,
        help="print the API's JSON, for scripts, instead of the human view",
    )
    return parent


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runlane")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
