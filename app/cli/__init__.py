"""The `runlane` command: the Procfile entry points, `dev` (the whole stack in the foreground) and
the HTTP client commands. Each submodule registers its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from app.config import ConfigError

Handler = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]

DESCRIPTION = """\
runlane: durable jobs with BullMQ-style semantics behind an HTTP API.

The client commands find the server from --url, else RUNLANE_URL, else http://127.0.0.1:$PORT
(PORT defaults to 8000), and the token from --token, else RUNLANE_TOKEN, else the dev token that
`runlane dev` wrote under RUNLANE_HOME (default ./.runlane)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.command(args) or 0)
    except ConfigError as exc:
        print(f"runlane: {exc}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    from app.cli import commands, dev, entry

    root = argparse.ArgumentParser(
        prog="runlane",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func: Handler, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help, **kwargs)
        cmd.set_defaults(command=func)
        return cmd

    dev.register(command)
    entry.register(command)
    commands.register(command)
    return root


if __name__ == "__main__":
    sys.exit(main())
