"""What the outage tests check once Redis or Postgres is back: every run succeeded with one
attempt (none stalled, none ran twice), every tail saw every event once, no process exited."""

from __future__ import annotations

from typing import Any

from runlane.client import Client
from tests.helpers import Stack, wait_for
from tests.tails import Tail, assert_complete


def assert_came_through(
    stack: Stack, api: Client, made: list[dict[str, Any]], tails: list[Tail]
) -> None:
    for run in made:
        done = wait_for(
            lambda run=run: (r := api.get(run["id"]))["status"] in ("succeeded", "failed") and r,
            60,
            interval=0.05,
            message=f"run {run['id']} to finish",
        )
        assert done["status"] == "succeeded" and done["attempt"] == 1, done
        types = [e["type"] for e in api.events(run["id"])]
        assert types.count("run.started") == 1 and "run.stalled" not in types, types
    for tail in tails:
        assert_complete(tail.wait_terminal(60))
    assert all(p.poll() is None for procs in stack.procs.values() for p in procs), stack.logs()
