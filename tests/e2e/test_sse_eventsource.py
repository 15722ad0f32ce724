"""Server-Sent Events as a browser's EventSource uses them, against the Procfile processes: the
token in the query string (it cannot set headers), reconnects with Last-Event-ID after every end
of the stream, and a 204 that makes it stop once a finished run has nothing left to send."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.tails import (
    ALPHA,
    assert_complete,
    close_code_at_once,
    event_source,
    finished_run,
    submit,
)

pytestmark = pytest.mark.e2e


def test_an_eventsource_with_a_query_token_follows_a_run_then_stops(stack_factory: Any) -> None:
    stack = stack_factory(RUNLANE_ACCESS_LOG="1").start_all()
    run_id = submit(stack, steps=10, interval_ms=20)
    url = f"{stack.base}/v1/runs/{run_id}/events?token=tok-alpha"
    live = event_source(url)
    assert_complete(live.events)
    assert live.statuses == [200, 204]
    last_seq = live.events[-1]["seq"]
    resumed = event_source(url, last_event_id=4)
    assert_complete(resumed.events, after=4)
    assert resumed.statuses == [200, 204]
    for cursor in (last_seq, last_seq + 10):
        assert event_source(url, last_event_id=cursor).statuses == [204]
        assert event_source(f"{url}&after={cursor}").statuses == [204]
    assert event_source(url.replace("tok-alpha", "nope")).statuses == [401]
    assert event_source(url.replace("tok-alpha", "tok-beta")).statuses == [404]
    for path in (f"/v1/runs/{run_id}/events", f"/v1/runs/{run_id}", "/v1/runs"):
        response = requests.get(f"{stack.base}{path}?token=tok-alpha", timeout=10)
        assert response.status_code == 401, path  # only the event stream takes ?token=
        assert response.headers["WWW-Authenticate"] == "Bearer"
    access_log = (stack.logdir / "web.0.log").read_text(errors="replace")
    assert f"/v1/runs/{run_id}/events?token=[redacted]" in access_log
    assert "tok-alpha" not in access_log


def test_finished_runs_left_open_in_many_tabs_pin_no_server_thread(stack_factory: Any) -> None:
    # Eight threads in all: a tail kept open by each of the reconnects below would use them up.
    stack = stack_factory(WEB_CONCURRENCY="1", RUNLANE_WEB_THREADS="8").start_all()
    run = finished_run(stack)
    events = f"{stack.base}/v1/runs/{run['id']}/events?token=tok-alpha"
    tail = f"{stack.base.replace('http://', 'ws://')}/v1/runs/{run['id']}/tail?token=tok-alpha"

    def reconnect(i: int) -> int | None:
        if i % 2:
            return close_code_at_once(f"{tail}&after={run['last_seq']}")
        return event_source(events, last_event_id=run["last_seq"]).statuses[0]

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(reconnect, range(80)))
    assert answers == [204, 1000] * 40
    assert requests.get(f"{stack.base}/healthz", headers=ALPHA, timeout=2).status_code == 200
