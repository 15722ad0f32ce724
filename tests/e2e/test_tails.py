"""Tails against the Procfile processes, with a real websocket client: ordered, gapless and
duplicate-free across client reconnects, relay deaths, Redis being emptied and relay takeovers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from runlane.client import ApiError, Client
from runlane.embedded import EmbeddedServers
from tests.helpers import Stack, wait_for
from tests.tails import (
    ALPHA,
    Tail,
    assert_complete,
    close_code_at_once,
    event_source,
    finished_run,
    submit,
)

pytestmark = pytest.mark.e2e


def seen(tail: Tail, n: int) -> bool:
    return len(tail.events) >= n


def relay_is_active(stack: Stack, index: int) -> bool:
    log = stack.logdir / f"relay.{index}.log"
    return log.exists() and "relay.active" in log.read_text(errors="replace")


def test_a_tail_gets_history_then_live_and_closes_1000(stack: Stack) -> None:
    run_id = submit(stack, steps=10)
    tail = Tail(stack.base, run_id).start()
    events = tail.wait_terminal()
    assert_complete(events)
    assert tail.close_codes == [1000]
    assert [e["data"]["percent"] for e in events if e["type"] == "run.progress"][-1] == 100
    late = Tail(stack.base, run_id, after=5).start()  # the whole history, then the close
    assert_complete(late.wait_terminal(), after=5)


def test_reconnecting_with_after_resumes_without_gap_or_duplicate(stack: Stack) -> None:
    tail = Tail(stack.base, submit(stack, steps=60, interval_ms=20)).start()
    for n in (10, 30):
        wait_for(lambda n=n: seen(tail, n), 20, message=f"{n} events")
        tail.drop_connection()
    assert_complete(tail.wait_terminal())
    assert len(tail.close_codes) == 1  # the two drops were ours, the one close the server's


def test_relay_killed_mid_run_and_restarted(stack: Stack) -> None:
    tail = Tail(stack.base, submit(stack, steps=80, interval_ms=20)).start()
    wait_for(lambda: seen(tail, 10), 20, message="10 events")
    stack.kill("relay")
    wait_for(lambda: seen(tail, 30), 20, message="events while no relay runs (Postgres polls)")
    stack.start("relay")
    assert_complete(tail.wait_terminal())


def test_redis_emptied_mid_run(stack_factory: Any, tmp_path: Path) -> None:
    private = EmbeddedServers(tmp_path / "redis").start(postgres=False)
    try:
        stack = stack_factory(REDIS_URL=private.redis_url).start_all()
        tail = Tail(stack.base, submit(stack, steps=80, interval_ms=20)).start()
        wait_for(lambda: seen(tail, 15), 20, message="15 events")
        Redis.from_url(private.redis_url).flushall()
        events = tail.wait_terminal()
        assert_complete(events)
        stack.stop()
    finally:
        private.stop()


def test_two_relays_and_the_active_one_killed(stack: Stack) -> None:
    wait_for(lambda: relay_is_active(stack, 0), 15, message="the first relay to be active")
    stack.start("relay")
    tail = Tail(stack.base, submit(stack, steps=80, interval_ms=20)).start()
    wait_for(lambda: seen(tail, 15), 20, message="15 events")
    assert not relay_is_active(stack, 1)
    stack.kill("relay", 0)
    wait_for(lambda: relay_is_active(stack, 1), 15, message="the standby relay to take over")
    assert_complete(tail.wait_terminal())


def test_fifty_tails_on_one_web_process_all_complete(stack_factory: Any) -> None:
    stack = stack_factory(WEB_CONCURRENCY="1").start_all(workers=2)
    run_ids = [submit(stack, steps=30, interval_ms=20) for _ in range(10)]
    tails = [Tail(stack.base, run_id).start() for run_id in run_ids for _ in range(5)]
    for tail in tails:
        assert_complete(tail.wait_terminal(60))


def test_sse_resumes_after_last_event_id_and_ends_after_the_terminal_event(stack: Stack) -> None:
    run_id = submit(stack, steps=20, interval_ms=20)
    url = f"{stack.base}/v1/runs/{run_id}/events"
    seen = event_source(url, ALPHA, last_event_id=3)
    assert_complete(seen.events, after=3)
    assert all(e["id"] == e["seq"] and e["event"] == e["type"] for e in seen.events)
    assert seen.statuses == [200, 204]  # the stream ended; its reconnect was told to stop


def test_a_tail_resumed_at_or_past_a_finished_runs_end_closes_at_once(stack: Stack) -> None:
    run = finished_run(stack)
    url = f"{stack.base.replace('http://', 'ws://')}/v1/runs/{run['id']}/tail?token=tok-alpha"
    for after in (run["last_seq"], run["last_seq"] + 5):
        assert close_code_at_once(f"{url}&after={after}") == 1000, after
    last = Tail(stack.base, run["id"], after=run["last_seq"] - 1).start()
    assert [e["type"] for e in last.wait_terminal()] == ["run.succeeded"]
    assert last.close_codes == [1000]


def test_tail_refusals_come_before_the_upgrade(stack: Stack) -> None:
    run_id = submit(stack, steps=1)
    ws_base = stack.base.replace("http://", "ws://")
    cases = [
        (f"/v1/runs/{run_id}/tail?token=tok-beta", 404),  # another tenant's run
        (f"/v1/runs/{run_id}/tail?token=nope", 401),
        (f"/v1/runs/{run_id}/tail", 401),
        ("/v1/runs/00000000-0000-0000-0000-000000000000/tail?token=tok-alpha", 404),
        (f"/v1/runs/{run_id}/tail?token=tok-alpha&after=x", 400),
        ("/v1/tail?token=tok-alpha&cursor=-1", 400),
    ]
    for path, status in cases:
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_base + path, open_timeout=10)
        assert refused.value.response.status_code == status, path
        assert refused.value.response.headers["Content-Type"] == "application/problem+json"


def test_a_plain_get_of_a_tail_is_checked_like_a_websocket_then_gets_426(stack: Stack) -> None:
    run_id = submit(stack, steps=1)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Authorization": "Bearer tok-alpha"}
    future = {
        **upgrade,
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "99",
    }
    cases = [
        (f"/v1/runs/{run_id}/tail", {}, 401),
        (f"/v1/runs/{run_id}/tail?token=nope", {}, 401),
        (f"/v1/runs/{run_id}/tail", {"Authorization": "Bearer tok-beta"}, 404),
        ("/v1/runs/00000000-0000-0000-0000-000000000000/tail?token=tok-alpha", {}, 404),
        (f"/v1/runs/{run_id}/tail?token=tok-alpha&after=x", {}, 400),
        (f"/v1/runs/{run_id}/tail?token=tok-alpha", {}, 426),
        (f"/v1/runs/{run_id}/tail", ALPHA, 426),
        (f"/v1/runs/{run_id}/tail", upgrade, 400),  # an upgrade, but no handshake
        (f"/v1/runs/{run_id}/tail", future, 426),  # a WebSocket version other than 13
        ("/v1/tail", {}, 401),
        ("/v1/tail?token=tok-alpha", {}, 426),
    ]
    for path, headers, status in cases:
        response = requests.get(stack.base + path, headers=headers, timeout=10)
        assert response.status_code == status, (path, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
        if status == 426 and headers is future:
            assert response.headers["Sec-WebSocket-Version"] == "13"
        elif status == 426:
            assert response.headers["Upgrade"] == "websocket"
        if status == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"


def tenant_messages(stack: Stack, count: int, **params: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in {"token": "tok-alpha", **params}.items())
    with connect(f"{stack.base.replace('http://', 'ws://')}/v1/tail?{query}") as ws:
        return [json.loads(ws.recv(timeout=20)) for _ in range(count)]


def test_tenant_tail_resumes_after_its_cursor(stack: Stack) -> None:
    first = Tail(stack.base, submit(stack, steps=5, interval_ms=10)).start()
    first_events = first.wait_terminal()
    got = tenant_messages(stack, len(first_events), cursor="0")
    assert [m["event"]["seq"] for m in got] == [e["seq"] for e in first_events]
    assert [int(m["cursor"]) for m in got] == list(range(1, len(got) + 1))
    resumed = tenant_messages(stack, 3, cursor=got[2]["cursor"])
    assert resumed == got[3:6]


def test_the_python_client_submits_and_tails_a_run(stack: Stack) -> None:
    client = Client(stack.base, "tok-alpha")
    run = client.submit("demo.progress", {"steps": 5, "interval_ms": 10}, idempotency_key="k1")
    events = list(client.tail(run["id"]))
    assert_complete(events)
    assert client.get(run["id"])["status"] == "succeeded"
    assert [e["seq"] for e in client.events(run["id"], after=2)] == [e["seq"] for e in events[2:]]
    with pytest.raises(ApiError) as refused:
        list(Client(stack.base, "tok-beta").tail(run["id"]))
    assert refused.value.status == 404
