"""`runlane token` against the Procfile stack: a token for runs or a queue, that reads the run
over HTTP and nothing else; bad durations refused before anything is sent."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.test_cli import failed, ok_json, ok_text, runlane
from tests.helpers import Stack

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
