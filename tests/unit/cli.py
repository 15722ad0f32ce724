"""The `runlane` command run in the test's own process, for the CLI's unit tests."""

from __future__ import annotations

from typing import Any

from runlane.cli import main


def cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """`runlane ARGS` in this process: its exit code, stdout and stderr (never a traceback)."""
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse: --help, usage errors
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err
