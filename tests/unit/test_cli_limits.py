"""`runlane limits` without a server: its option values (counts, rates, `none`), which of them a
PUT sends, its human view, and its usage errors (exit 2, naming the option)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from runlane.cli import limits, parser
from runlane.embedded import free_port
from tests.unit.cli import cli


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1), ("25", 25), ("none", None), ("None", None), (" NONE ", None)]
)
def test_count_option(text: str, value: int | None) -> None:
    assert limits.count(text) == value


@pytest.mark.parametrize("text", ["0", "x", "-1", "+3", "1.5", "1_000", "", "nothing"])
def test_count_option_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a limit"):
        limits.count(text)


@pytest.mark.parametrize(
    ("text", "limit", "period_s"),
    [("10/1", 10, 1.0), ("10/1.5", 10, 1.5), ("100/60", 100, 60.0), ("100/1m", 100, 60.0),
     ("5/500ms", 5, 0.5), ("3/1h30m", 3, 5400.0), ("10/s", 10, 1.0), ("2/M", 2, 60.0)],
)  # fmt: skip
def test_rate_option(text: str, limit: int, period_s: float) -> None:
    assert limits.rate(text) == {"limit": limit, "period_s": period_s}


@pytest.mark.parametrize(
    ("text", "why"),
    [("ten", "N/SECONDS"), ("10", "N/SECONDS"), ("10/", "N/SECONDS"), ("/1", "N/SECONDS"),
     ("ten/1", "N/SECONDS"), ("10/soon", "N/SECONDS"), ("10/-1", "N/SECONDS"),
     ("1.5/1", "N/SECONDS"), ("0/1", "at least 1"), ("10/0", "over 0"), ("10/0ms", "over 0")],
)  # fmt: skip
def test_rate_option_refuses(text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        limits.rate(text)
    assert limits.rate("none") is None


def test_only_the_options_given_are_sent_and_none_is_sent_as_null() -> None:
    args = parser().parse_args(["limits", "q", "--rate", "none", "--key-concurrency", "3"])
    assert args.command is not None and args.queue == "q"
    assert {name: getattr(args, name) for name in limits.FIELDS if hasattr(args, name)} == {
        "rate": None,
        "key_concurrency": 3,
    }
    shown = parser().parse_args(["--json", "limits", "q"])
    assert shown.json and not any(hasattr(shown, name) for name in limits.FIELDS)


def test_limits_block_has_one_line_per_limit() -> None:
    shown = {"concurrency": 2, "rate": {"limit": 10, "period_s": 1.5}, "key_concurrency": None,
             "key_rate": {"limit": 100, "period_s": 60.0}}  # fmt: skip
    assert limits.limits_block(shown).splitlines() == [
        "concurrency      2",
        "rate             10 per 1.5 s",
        "key_concurrency  none",
        "key_rate         100 per 60 s",
    ]
    assert limits.limits_block(None) == limits.limits_block(limits.NO_LIMITS)
    assert [line.split() for line in limits.limits_block({}).splitlines()] == [
        [name, "none"] for name in limits.FIELDS
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--rate", "ten"), "argument --rate: not a rate: 'ten'"),
     (("--rate", "0/1"), "argument --rate: not a rate: '0/1' (N must be at least 1)"),
     (("--key-rate", "1/x"), "argument --key-rate: not a rate"),
     (("--concurrency", "0"), "argument --concurrency: not a limit: '0'"),
     (("--concurrency", "x"), "argument --concurrency: not a limit: 'x'"),
     (("--key-concurrency", "-2"), "argument --key-concurrency: not a limit: '-2'"),
     (("--concurrency",), "argument --concurrency: expected one argument")],
)  # fmt: skip
def test_bad_values_exit_2_naming_the_option(
    capsys: Any, monkeypatch: Any, args: tuple[str, ...], message: str
) -> None:
    # Nothing listens there: a usage error must be said before any request is made.
    monkeypatch.setenv("RUNLANE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("RUNLANE_TOKEN", "tok")
    code, out, err = cli(capsys, "limits", "emails", *args)
    assert code == 2 and message in err and out == ""
    assert "cannot reach" not in err


def test_help_shows_the_options_and_examples(capsys: Any) -> None:
    code, text, _ = cli(capsys, "limits", "--help")
    assert code == 0 and "examples:" in text and "--json" in text
    for needle in ("--concurrency N", "--rate N/SECONDS", "--key-concurrency N",
                   "--key-rate N/SECONDS", "none removes it"):  # fmt: skip
        assert needle in text, needle
    code, top, _ = cli(capsys, "--help")
    assert code == 0 and "limits" in top
