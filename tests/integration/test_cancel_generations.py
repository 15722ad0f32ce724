"""A cancel request belongs to one attempt: a run retried after a cancel runs its task in full,
and a cancel flag left (or written late) for an earlier attempt never stops a later one. With a
real RunlaneWorker, one attempt at a time and in threads, and the web's cancel and retry."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.domain import RunStatus
from app.web import create_app
from tests.conftest import auth
from tests.helpers import wait_for
from tests.integration import test_execute as base
from tests.integration.test_execute import events, load, make_worker, submit

services = base.services  # a fixture

SLEEP = ("demo.sleep", {"seconds": 1.0})
PROGRESS = ("demo.progress", {"steps": 5, "interval_ms": 200})


@pytest.fixture(params=[1, 20], ids=["one-at-a-time", "threaded"])
def test_settings(request, settings):
    return dataclasses.replace(
        settings, task_modules=("tests.tasks",), worker_concurrency=request.param
    )


@pytest.fixture
def web(services) -> FlaskClient:
    return create_app(services=services).test_client()


def while_working(settings, redis, body: Callable[[], None], timeout: float = 30) -> None:
    """`body` in a thread while a worker works in the main thread (signals work there only);
    the worker stops when `body` is done, and `body`'s failure fails the test."""
    worker = make_worker(settings, redis)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:
            failures.append(exc)
        finally:
            worker.request_stop(signal.SIGTERM, None)  # as a first SIGTERM does

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    worker.work()
    thread.join(timeout)
    if failures:
        raise failures[0]


def status_is(services, run_id: str, status: RunStatus, attempt: int | None = None) -> Any:
    def check() -> bool:
        run = load(services, run_id)
        return run.status is status and attempt in (None, run.attempt)

    return check


def cancel(web: FlaskClient, services, run_id: str) -> None:
    """Cancel as a client does, once the run is running; wait until it is cancelled."""
    wait_for(status_is(services, run_id, RunStatus.RUNNING), 10, message="the run to start")
    response = web.post(f"/v1/runs/{run_id}/cancel", headers=auth())
    assert response.status_code == 200, response.get_json()
    wait_for(status_is(services, run_id, RunStatus.CANCELLED), 5, message="cancelled")


def retry(web: FlaskClient, run_id: str) -> None:
    response = web.post(f"/v1/runs/{run_id}/retry", headers=auth())
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "queued"


def last_attempt_events(services, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The events from the last run.started on, as (type, data)."""
    found = [(e.type.value, e.data) for e in events(services, run_id)]
    starts = [i for i, (kind, _) in enumerate(found) if kind == "run.started"]
    return found[starts[-1] :]


def assert_did_the_full_work(services, run_id: str, task: str) -> None:
    done = load(services, run_id)
    assert done.status is RunStatus.SUCCEEDED and done.attempt == 2, (done.status, done.attempt)
    last = last_attempt_events(services, run_id)
    assert last[0] == ("run.started", {"attempt": 2, "worker": last[0][1]["worker"]})
    if task == "demo.sleep":
        assert done.result == {"slept": 1.0}
        assert (done.finished_at - done.started_at).total_seconds() >= 1.0
    else:
        progress = [data for kind, data in last if kind == "run.progress"]
        assert progress == [
            {"percent": round(100 * i / 5), "message": f"step {i}/5"} for i in range(1, 6)
        ]
        assert done.result == {"steps": 5}
    assert [kind for kind, _ in last][-1] == "run.succeeded"


def cancel_requested_at(services, run_id: str) -> Any:
    with services.pool.connection() as conn:
        row = conn.execute(
            "SELECT cancel_requested_at FROM runs WHERE id = %s", (run_id,)
        ).fetchone()
    return row["cancel_requested_at"]


@pytest.mark.parametrize(("task", "input"), [SLEEP, PROGRESS], ids=["sleep", "progress"])
def test_a_retry_after_a_cancel_runs_the_task_in_full(
    services, test_settings, redis, web, task, input
):
    run = submit(services, task, input)

    def body() -> None:
        cancel(web, services, run.id)
        assert cancel_requested_at(services, run.id) is not None
        retry(web, run.id)
        assert cancel_requested_at(services, run.id) is None  # Postgres forgets it too
        wait_for(lambda: load(services, run.id).status.terminal, 15, message="the retry to end")

    while_working(test_settings, redis, body)
    assert_did_the_full_work(services, run.id, task)


def test_a_late_cancel_flag_of_an_earlier_attempt_leaves_the_next_alone(
    services, test_settings, redis, web
):
    run = submit(services, *PROGRESS)

    def body() -> None:
        cancel(web, services, run.id)
        retry(web, run.id)
        wait_for(status_is(services, run.id, RunStatus.RUNNING, attempt=2), 10, message="retry")
        # the web's flag write for attempt 1, landing only now (a slow request, a Redis hiccup)
        services.redis.set(services.keys.cancel(run.id, 1), "1", ex=60)
        wait_for(lambda: load(services, run.id).status.terminal, 15, message="the retry to end")

    while_working(test_settings, redis, body)
    assert_did_the_full_work(services, run.id, PROGRESS[0])


def test_the_retried_attempt_runs_until_its_own_cancel_stops_it(
    services, test_settings, redis, web
):
    run = submit(services, "demo.progress", {"steps": 100, "interval_ms": 100})

    def progressed(steps: int) -> Callable[[], bool]:
        return lambda: (
            sum(k == "run.progress" for k, _ in last_attempt_events(services, run.id)) >= steps
        )

    def body() -> None:
        cancel(web, services, run.id)
        retry(web, run.id)
        wait_for(status_is(services, run.id, RunStatus.RUNNING, attempt=2), 10, message="retry")
        wait_for(progressed(3), 5, message="the retried attempt to go on past its start")
        cancel(web, services, run.id)

    while_working(test_settings, redis, body)
    done = load(services, run.id)
    assert done.status is RunStatus.CANCELLED and done.attempt == 2
    assert (done.finished_at - cancel_requested_at(services, run.id)).total_seconds() < 1.0
    assert [kind for kind, _ in last_attempt_events(services, run.id)][-1] == "run.cancelled"
