"""Execution on real Postgres and Redis, with RunlaneWorker in burst mode in this process."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import Redis

from app import attempts, dispatch, runs
from app.config import Settings
from app.domain import Event, Run, RunStatus
from app.runs import NewRun
from app.services import Services
from tests.helpers import wait_for
from workers.execute import Executor
from workers.scheduler import Scheduler
from workers.worker import RunlaneWorker

TENANT = "alpha"


@pytest.fixture
def test_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, task_modules=("tests.tasks",))


@pytest.fixture
def services(test_settings: Settings, redis: Redis) -> Iterator[Services]:
    svc = Services.build(test_settings, pool_size=4, name="test")
    yield svc
    svc.close()


def submit(services: Services, task: str = "demo.echo", input: Any = None, **fields: Any) -> Run:
    """A run created as the web creates one, and handed to RQ."""
    delay = fields.pop("delay_ms", None)
    new = NewRun(
        tenant=fields.pop("tenant", TENANT),
        task=task,
        queue=fields.pop("queue", "default"),
        input=input,
        priority=fields.pop("priority", 5),
        max_attempts=fields.pop("max_attempts", 1),
        backoff=fields.pop("backoff", None),
        timeout_s=fields.pop("timeout_s", None),
        metadata={},
        scheduled_for=_after_ms(delay) if delay else None,
        delayed=bool(delay),
    )
    assert not fields, fields
    with services.pool.connection() as conn:
        run, _ = runs.create_run(conn, new)
    if run.status is RunStatus.QUEUED:
        dispatch.enqueue(services.redis, services.keys, [run])
    return run


def _after_ms(ms: int) -> datetime:
    return datetime.now(UTC) + timedelta(milliseconds=ms)


def load(services: Services, run_id: str) -> Run:
    with services.pool.connection() as conn:
        return runs.get_run(conn, TENANT, run_id)


def events(services: Services, run_id: str) -> list[Event]:
    with services.pool.connection() as conn:
        return runs.list_events(conn, run_id)


def types(services: Services, run_id: str) -> list[str]:
    return [e.type.value for e in events(services, run_id)]


def make_worker(settings: Settings, redis: Redis) -> RunlaneWorker:
    return RunlaneWorker(["default"], connection=redis, settings=settings)


def work(settings: Settings, redis: Redis) -> None:
    make_worker(settings, redis).work(burst=True)


class SchedulerThread:
    """The scheduler's steps ticking in a background thread, as the scheduler process does."""

    def __init__(self, services: Services) -> None:
        self.scheduler = Scheduler(services)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.stop.wait(self.scheduler.tick())

    def __enter__(self) -> SchedulerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def work_until(
    settings: Settings, redis: Redis, done: Callable[[], bool], timeout: float = 15
) -> None:
    """Work in the main thread (signals work there) until `done` holds, or fail at the deadline."""
    worker = make_worker(settings, redis)

    def watch() -> None:
        try:
            wait_for(done, timeout, message="runs to finish")
        finally:
            worker.request_stop(signal.SIGTERM, None)  # as a first SIGTERM does

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    worker.work()
    watcher.join()
    assert done(), "runs did not finish in time"


def terminal(services: Services, *run_ids: str) -> Callable[[], bool]:
    return lambda: all(load(services, r).status.terminal for r in run_ids)


# -- tests ----------------------------------------------------------------------------------


def test_a_run_succeeds_with_its_input_as_result(services, test_settings, redis):
    run = submit(services, "demo.echo", {"hello": [1, 2]})
    work(test_settings, redis)
    done = load(services, run.id)
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == {"hello": [1, 2]}
    assert done.attempt == 1 and done.started_at and done.finished_at
    evs = events(services, run.id)
    assert [e.type.value for e in evs] == ["run.queued", "run.started", "run.succeeded"]
    assert [e.seq for e in evs] == [1, 2, 3]
    assert evs[1].data["attempt"] == 1 and evs[1].data["worker"]
    assert evs[2].data == {"result": {"hello": [1, 2]}}


def test_context_progress_log_and_identity(services, test_settings, redis):
    run = submit(services, "tests.chatty")
    work(test_settings, redis)
    done = load(services, run.id)
    assert done.result == {"run_id": run.id, "attempt": 1, "cancelled": False}
    assert done.progress == {"percent": 50, "message": "half"}
    evs = events(services, run.id)
    assert [e.type.value for e in evs] == [
        "run.queued",
        "run.started",
        "run.log",
        "run.progress",
        "run.succeeded",
    ]
    assert evs[2].data == {"level": "warning", "message": "hello"}


def test_demo_progress_reports_each_step(services, test_settings, redis):
    run = submit(services, "demo.progress", {"steps": 4, "interval_ms": 10})
    work(test_settings, redis)
    progress = [e.data for e in events(services, run.id) if e.type.value == "run.progress"]
    assert progress == [
        {"percent": round(100 * i / 4), "message": f"step {i}/4"} for i in (1, 2, 3, 4)
    ]
    assert load(services, run.id).result == {"steps": 4}


def test_duplicate_deliveries_run_one_attempt(services, test_settings, redis):
    run = submit(services, "demo.noop")
    for _ in range(3):  # the web's fast path, a sweep, a replay: the same id reaches RQ again
        dispatch.enqueue(services.redis, services.keys, [run])
    work(test_settings, redis)
    dispatch.enqueue(services.redis, services.keys, [run])  # and once after it finished
    work(test_settings, redis)
    assert types(services, run.id) == ["run.queued", "run.started", "run.succeeded"]
    assert load(services, run.id).attempt == 1


def test_many_runs_each_once_and_job_hashes_deleted(services, test_settings, redis):
    made = [submit(services, "demo.noop") for _ in range(300)]
    work(test_settings, redis)
    statuses = {load(services, r.id).status for r in made}
    assert statuses == {RunStatus.SUCCEEDED}
    assert not any(redis.exists(f"rq:job:{r.id}") for r in made)


def test_result_that_is_not_json_fails_the_attempt(services, test_settings, redis):
    run = submit(services, "tests.unserializable")
    work(test_settings, redis)
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED
    assert done.error["type"] == "TypeError"


def test_unknown_task_fails(services, test_settings, redis):
    run = submit(services, "no.such.task")
    work(test_settings, redis)
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.error["type"] == "UnknownTask"


def kill_backend(services: Services, pid: int) -> None:
    with services.pool.connection() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_claim_whose_commit_lost_its_reply_is_still_run_once(services, test_settings, redis):
    run = submit(services, "demo.noop")
    executor = Executor(services, "w-lost-reply")
    try:
        # the commit went through, but Postgres dropped the connection before it answered
        with services.pool.connection() as conn:
            attempts.group_commit(
                conn, [attempts.claim_change(run.id, worker=executor.worker, lease_s=30)]
            )
        kill_backend(services, executor.conn.info.backend_pid)
        claimed = executor.commit([], [run.id])
        assert [attempt.run.id for attempt in claimed] == [run.id]
        executor.commit([executor.run(claimed[0])], [])
    finally:
        executor.close()
    assert types(services, run.id) == ["run.queued", "run.started", "run.succeeded"]


def test_progress_survives_a_dropped_connection(services, test_settings, redis):
    run = submit(services, "demo.progress", {"steps": 2, "interval_ms": 1})
    executor = Executor(services, "w-dropped")
    try:
        [attempt] = executor.commit([], [run.id])
        kill_backend(services, executor.conn.info.backend_pid)
        executor.commit([executor.run(attempt)], [])
    finally:
        executor.close()
    done = load(services, run.id)
    assert done.status is RunStatus.SUCCEEDED and done.result == {"steps": 2}
    assert types(services, run.id).count("run.progress") == 2
