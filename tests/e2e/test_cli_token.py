"""`runlane token` against the Procfile stack: a token for runs or a queue, that reads the run
over HTTP and nothing else; bad durations refused before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.e2e.test_cli import failed, ok_json, ok_text, runlane
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_a_token_made_by_the_cli_reads_its_run_only(stack: Stack) -> None:
    run = ok_json(runlane(stack, "submit", "demo.echo", "--json"))
    other = ok_json(runlane(stack, "submit", "demo.echo", "--json"))

    made = ok_json(runlane(stack, "token", "--run", run["id"], "--ttl", "10m", "--json"))
    text = ok_text(runlane(stack, "token", "--queue", "default", "--ttl", "90s"))

    headers = {"Authorization": f"Bearer {made['token']}"}
    assert requests.get(f"{stack.base}/v1/runs/{run['id']}", headers=headers, timeout=10).ok
    refused = requests.get(f"{stack.base}/v1/runs/{other['id']}", headers=headers, timeout=10)
    assert refused.status_code == 403
    token, expires = text.splitlines()
    assert token.startswith("rls_") and expires.startswith("expires 20")
    assert "ttl" in failed(runlane(stack, "token", "--run", run["id"], "--ttl", "2d"), 2)
    assert "--run" in failed(runlane(stack, "token"), 2)
    missing = failed(runlane(stack, "token", "--run", "00000000-0000-4000-8000-000000000000"))
    assert "no such run" in missing


def test_no_token_reaches_a_log_line(stack_factory: Any) -> None:
    stack = stack_factory(RUNLANE_ACCESS_LOG="1").start_all()
    run = ok_json(runlane(stack, "submit", "demo.echo", "--json"))
    scoped = ok_json(runlane(stack, "token", "--run", run["id"], "--json"))["token"]
    events = f"{stack.base}/v1/runs/{run['id']}/events"
    used = [
        requests.get(events, headers={"Accept": "text/event-stream"},
                     params={"token": scoped}, timeout=10),
        requests.get(f"{stack.base}/v1/runs/{run['id']}", params={"token": scoped}, timeout=10),
        requests.get(f"{stack.base}/v1/queues", headers={"Authorization": f"Bearer {scoped}"},
                     timeout=10),
        requests.get(events, params={"token": scoped[:-3] + "xyz"}, timeout=10),
    ]  # fmt: skip
    assert [r.status_code for r in used] == [200, 401, 403, 401]

    def logs() -> str:  # every line of every process, the access log among them
        return "\n".join(p.read_text(errors="replace") for p in stack.logdir.glob("*.log"))

    wait_for(lambda: logs().count("token=[redacted]") >= 3, timeout=10)
    for secret in ("tok-alpha", scoped, scoped[len("rls_") : len("rls_") + 40]):
        assert secret not in logs()
