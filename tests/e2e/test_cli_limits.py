"""`runlane limits` against the Procfile stack, as a user runs it: limits set, shown, merged and
removed with `none`, in the human view, with --json and in `runlane queues`; bad values refused
before anything is sent, and the server's refusals shown as its problem."""

from __future__ import annotations

import pytest

from tests.e2e.test_cli import failed, ok_json, ok_text, runlane
from tests.helpers import Stack

pytestmark = pytest.mark.e2e
NONE = {"concurrency": None, "rate": None, "key_concurrency": None, "key_rate": None}
ALL_NONE = [
    "concurrency      none",
    "rate             none",
    "key_concurrency  none",
    "key_rate         none",
]


def test_limits_are_set_shown_merged_and_removed(stack: Stack) -> None:
    assert ok_text(runlane(stack, "limits", "reports")).splitlines() == ALL_NONE
    unlisted = ok_json(runlane(stack, "limits", "reports", "--json"))
    assert (unlisted["name"], unlisted["limits"]) == ("reports", NONE)

    first = ok_json(runlane(stack, "limits", "reports", "--concurrency", "2", "--json"))
    assert first["name"] == "reports" and first["limits"] == {**NONE, "concurrency": 2}
    assert {"paused", "workers", "counts"} <= set(first), "the queue, as the API answers it"
    merged = ok_text(runlane(stack, "limits", "reports", "--rate", "10/1.5"))
    assert merged.splitlines() == [
        "concurrency      2",
        "rate             10 per 1.5 s",
        "key_concurrency  none",
        "key_rate         none",
    ]
    assert ok_text(runlane(stack, "limits", "reports")) == merged
    shown = ok_json(runlane(stack, "--json", "limits", "reports"))["limits"]
    assert shown == {**NONE, "concurrency": 2, "rate": {"limit": 10, "period_s": 1.5}}

    per_key = ok_json(
        runlane(stack, "limits", "reports", "--key-concurrency", "1", "--key-rate", "100/1m",
                "--json")
    )["limits"]  # fmt: skip
    assert per_key == {**shown, "key_concurrency": 1, "key_rate": {"limit": 100, "period_s": 60}}
    table = ok_text(runlane(stack, "queues")).splitlines()
    assert table[0].split()[-1] == "LIMITS"
    row = next(line for line in table if line.startswith("reports "))
    assert row.endswith("concurrency 2, rate 10/1.5s, key_concurrency 1, key_rate 100/1m")

    removed = runlane(stack, "limits", "reports", "--concurrency", "none", "--rate", "NONE")
    assert ok_text(removed).splitlines() == [
        "concurrency      none",
        "rate             none",
        "key_concurrency  1",
        "key_rate         100 per 60 s",
    ]
    gone = runlane(stack, "limits", "reports", "--key-concurrency", "none", "--key-rate", "none")
    assert ok_text(gone).splitlines() == ALL_NONE
    listed = ok_json(runlane(stack, "queues", "--json"))["items"]
    assert "reports" not in {queue["name"] for queue in listed}, "no limits, no runs: not listed"
    assert ok_text(runlane(stack, "limits", "reports")).splitlines() == ALL_NONE


def test_bad_values_are_refused_naming_the_option(stack: Stack) -> None:
    for args, option in [
        (("--rate", "ten"), "--rate"),
        (("--rate", "0/1"), "--rate"),
        (("--key-rate", "5/never"), "--key-rate"),
        (("--concurrency", "0"), "--concurrency"),
        (("--concurrency", "x"), "--concurrency"),
        (("--key-concurrency", "1.5"), "--key-concurrency"),
    ]:
        refused = failed(runlane(stack, "limits", "reports", "--concurrency", "3", *args), 2)
        assert f"argument {option}: " in refused, (args, refused)
    assert ok_json(runlane(stack, "limits", "reports", "--json"))["limits"] == NONE, "none sent"

    too_many = failed(runlane(stack, "limits", "reports", "--concurrency", "9999999999"))
    assert "422" in too_many and "\n  concurrency: " in too_many
    assert "404 Not Found: no such queue" in failed(
        runlane(stack, "limits", "not a queue!", "--concurrency", "1")
    )
    refused = failed(runlane(stack, "limits", "reports", "--concurrency", "1", token="wrong"))
    assert "401" in refused and "the token came from" in refused
    assert ok_json(runlane(stack, "limits", "reports", "--json"))["limits"] == NONE
