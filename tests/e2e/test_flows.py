"""Flows (CONTRACT §5.4) with real `rq worker` processes, relay and scheduler, over HTTP: a parent
waits for its children, gets their results in order, and fails, cancels and retries as a whole."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from redis import Redis

from tests.conftest import auth
from tests.e2e.api import get_events, get_run, post_run, status_is
from tests.e2e.test_redis_restart import Restartable
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e
TERMINAL = ("succeeded", "failed", "cancelled")


def children_of(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    url = f"{stack.base}/v1/runs?parent_id={run_id}&limit=200"
    response = requests.get(url, headers=auth(), timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def types(stack: Stack, run_id: str) -> list[str]:
    return [e["type"] for e in get_events(stack, run_id)]


def finished(stack: Stack, run_id: str, timeout: float = 60) -> dict[str, Any]:
    return dict(wait_for(status_is(stack, run_id, *TERMINAL), timeout, message=f"{run_id} ends"))


def started_before(stack: Stack, parent: dict[str, Any], children: list[dict[str, Any]]) -> None:
    """The parent's attempt started after every child had ended."""
    started = get_run(stack, parent["id"])["started_at"]
    for child in children:
        assert child["finished_at"] is not None and child["finished_at"] < started, child


def test_a_parent_gets_every_childs_result_in_order_across_two_workers(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory().start_all(workers=2)
    children = [{"task": "demo.echo", "input": {"n": i}} for i in range(20)]
    parent = post_run(stack, {"task": "demo.collect", "children": children})
    assert parent["status"] == "waiting"
    assert parent["waiting"]["reason"] == "children"
    assert parent["children"] == {
        "total": 20, "succeeded": 0, "failed": 0, "cancelled": 0, "pending": 0 + 20
    }  # fmt: skip
    done = finished(stack, parent["id"])
    assert done["status"] == "succeeded", done
    made = children_of(stack, parent["id"])
    assert len(made) == 20 and {c["parent_id"] for c in made} == {parent["id"]}
    result = done["result"]["children"]
    assert [c["result"] for c in result] == [{"n": i} for i in range(20)]
    assert [c["status"] for c in result] == ["succeeded"] * 20
    assert {c["id"] for c in result} == {c["id"] for c in made}
    assert {c["task"] for c in result} == {"demo.echo"}
    assert done["children"] == {
        "total": 20, "succeeded": 20, "failed": 0, "cancelled": 0, "pending": 0
    }  # fmt: skip
    workers = {e["data"]["worker"] for c in made for e in get_events(stack, c["id"])
               if e["type"] == "run.started"}  # fmt: skip
    assert len(workers) == 2, "both workers ran children"
    assert types(stack, parent["id"]) == [
        "run.waiting", "run.children_done", "run.started", "run.succeeded"
    ]  # fmt: skip
    done_event = get_events(stack, parent["id"])[1]
    assert done_event["data"] == {"succeeded": 20, "failed": 0, "cancelled": 0}
    started_before(stack, done, children_of(stack, parent["id"]))


def test_a_nested_flow_of_depth_three_runs_from_the_leaves_up(stack: Stack) -> None:
    leaf = {"task": "demo.echo", "input": "leaf"}
    body = {
        "task": "demo.collect",
        "children": [
            {"task": "demo.collect", "children": [{"task": "demo.collect", "children": [leaf]}]},
            {"task": "demo.echo", "input": "side"},
        ],
    }
    root = post_run(stack, body)
    done = finished(stack, root["id"])
    assert done["status"] == "succeeded", done
    first, side = done["result"]["children"]
    assert side["result"] == "side"
    middle = first["result"]["children"][0]
    assert middle["result"] == {"children": [{"id": middle["result"]["children"][0]["id"],
                                              "task": "demo.echo", "status": "succeeded",
                                              "result": "leaf"}]}  # fmt: skip
    level1 = get_run(stack, first["id"])
    level2 = get_run(stack, middle["id"])
    assert level1["parent_id"] == root["id"] and level2["parent_id"] == first["id"]
    started_before(stack, level1, [level2])
    started_before(stack, done, [level1, get_run(stack, side["id"])])


def test_a_failing_child_under_fail_fails_the_parent_and_stops_its_siblings(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory().start_all(workers=2)
    body = {
        "task": "demo.collect",
        "children": [
            {"task": "demo.sleep", "input": {"seconds": 30}},
            {"task": "demo.fail", "input": {"times": 1}, "delay_ms": 1500},
            {"task": "demo.sleep", "input": {"seconds": 30}, "queue": "nobody"},
        ],
    }
    parent = post_run(stack, body)
    sleeper, failing, unserved = children_of(stack, parent["id"])[::-1]
    wait_for(status_is(stack, sleeper["id"], "running"), 20, message="the sleeper to start")
    began = time.monotonic()
    done = finished(stack, parent["id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "ChildFailed"
    assert failing["id"] in done["error"]["message"]
    assert done["attempt"] == 0  # its task never ran
    stopped = finished(stack, sleeper["id"], timeout=15)
    took = time.monotonic() - began
    assert stopped["status"] == "cancelled", stopped
    assert took < 10, "the running sibling is stopped as a cancel stops it, not left to run 30 s"
    assert get_run(stack, unserved["id"])["status"] == "cancelled"
    assert get_run(stack, failing["id"])["status"] == "failed"
    assert types(stack, parent["id"]) == ["run.waiting", "run.failed"]


def test_a_failing_child_under_ignore_lets_the_parent_run_with_what_finished(
    stack: Stack,
) -> None:
    body = {
        "task": "demo.collect",
        "on_child_failure": "ignore",
        "children": [
            {"task": "demo.echo", "input": 1},
            {"task": "demo.fail", "input": {"times": 5}},
            {"task": "demo.echo", "input": 3},
        ],
    }
    parent = post_run(stack, body)
    done = finished(stack, parent["id"])
    assert done["status"] == "succeeded", done
    statuses = [c["status"] for c in done["result"]["children"]]
    assert statuses == ["succeeded", "failed", "succeeded"]
    assert [c["result"] for c in done["result"]["children"]] == [1, None, 3]
    event = next(e for e in get_events(stack, parent["id"]) if e["type"] == "run.children_done")
    assert event["data"] == {"succeeded": 2, "failed": 1, "cancelled": 0}


def test_cancelling_a_parent_cancels_its_children_running_or_not(stack: Stack) -> None:
    body = {
        "task": "demo.collect",
        "children": [
            {"task": "demo.sleep", "input": {"seconds": 30}},
            {"task": "demo.collect", "children": [{"task": "demo.echo", "delay_ms": 60_000}]},
        ],
    }
    parent = post_run(stack, body)
    kids = children_of(stack, parent["id"])
    sleeper = next(c for c in kids if c["task"] == "demo.sleep")
    nested = next(c for c in kids if c["task"] == "demo.collect")
    wait_for(status_is(stack, sleeper["id"], "running"), 20, message="the sleeper to start")
    url = f"{stack.base}/v1/runs/{parent['id']}/cancel"
    response = requests.post(url, headers=auth(), timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert finished(stack, sleeper["id"], timeout=10)["status"] == "cancelled"
    assert get_run(stack, nested["id"])["status"] == "cancelled"
    grandchild = children_of(stack, nested["id"])[0]
    assert finished(stack, grandchild["id"], timeout=10)["status"] == "cancelled"
    assert get_run(stack, parent["id"])["children"]["cancelled"] == 2


def test_retrying_a_failed_parent_reruns_only_the_children_that_did_not_succeed(
    stack: Stack,
) -> None:
    body = {
        "task": "demo.collect",
        "children": [
            {"task": "demo.echo", "input": "kept"},
            {"task": "demo.fail", "input": {"times": 1}},
        ],
    }
    parent = post_run(stack, body)
    assert finished(stack, parent["id"])["status"] == "failed"
    good, flaky = children_of(stack, parent["id"])[::-1]
    wait_for(status_is(stack, good["id"], *TERMINAL), 20, message="the echo to end")
    response = requests.post(
        f"{stack.base}/v1/runs/{parent['id']}/retry", headers=auth(), timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "waiting"
    done = finished(stack, parent["id"])
    assert done["status"] == "succeeded", done
    assert [c["result"] for c in done["result"]["children"]] == ["kept", {"attempt": 2}]
    assert types(stack, good["id"]).count("run.started") == 1, "a child that succeeded is kept"
    assert types(stack, flaky["id"]).count("run.started") == 2


def test_a_parent_runs_once_after_every_child_though_a_worker_dies_and_redis_empties(
    stack_factory: Callable[..., Stack], own_redis: Restartable
) -> None:
    stack = stack_factory(REDIS_URL=own_redis.url).start_all(workers=2)
    children = [{"task": "demo.sleep", "input": {"seconds": 1.5}} for _ in range(4)]
    children += [{"task": "demo.echo", "input": i} for i in range(6)]
    parent = post_run(stack, {"task": "demo.collect", "children": children})
    kids = children_of(stack, parent["id"])
    sleepers = [c for c in kids if c["task"] == "demo.sleep"]
    wait_for(lambda: any(get_run(stack, c["id"])["status"] == "running" for c in sleepers),
             20, message="a sleeper to start")  # fmt: skip
    stack.kill("worker", 0)
    client = Redis.from_url(own_redis.url)
    assert client.dbsize() > 0
    client.flushall()  # what the web and the workers put there: the parent's children's jobs
    client.close()
    stack.start("worker")
    done = finished(stack, parent["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert types(stack, parent["id"]).count("run.started") == 1
    started_before(stack, done, children_of(stack, parent["id"]))
    assert [c["status"] for c in done["result"]["children"]] == ["succeeded"] * 10


def counts(stack: Stack, queue: str = "default") -> dict[str, int]:
    queues = requests.get(f"{stack.base}/v1/queues", headers=auth(), timeout=10).json()["items"]
    return dict(next(q["counts"] for q in queues if q["name"] == queue))


def test_a_batch_of_a_thousand_runs_succeeds(stack: Stack) -> None:
    runs = [{"task": "demo.echo", "input": i} for i in range(1000)]
    url = f"{stack.base}/v1/runs/batch"
    response = requests.post(url, json={"runs": runs}, headers=auth(), timeout=30)
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    done = wait_for(lambda: (c := counts(stack))["succeeded"] == 1000 and c, 60, message="1000")
    assert done["failed"] == done["cancelled"] == done["queued"] == 0
    assert [get_run(stack, items[i]["id"])["result"] for i in (0, 517, 999)] == [0, 517, 999]
