"""app.queues on real Postgres: pauses and counts per tenant, and what a resume hands back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from app import attempts, queues, runs
from app.domain import Run
from app.runs import Conn
from app.services import Services
from tests.helpers import new_run


@pytest.fixture
def conn(services: Services) -> Iterator[Conn]:
    with services.pool.connection() as conn:
        yield conn


def create(conn: Conn, **fields: object) -> Run:
    run, _ = runs.create_run(conn, new_run(**fields))
    return run


def claim(conn: Conn, run: Run) -> Run | None:
    """A worker's claim of the run's next attempt (None: refused)."""
    return attempts.group_commit(conn, [attempts.claim_change(run.id, worker="w", lease_s=30)])[0]


def test_a_pause_is_the_tenants_own_and_pausing_twice_is_one_pause(conn: Conn) -> None:
    queues.pause_queue(conn, "alpha", "default")
    queues.pause_queue(conn, "alpha", "default")
    queues.pause_queue(conn, "alpha", "mail")
    assert queues.paused_queues(conn, "alpha") == {"default", "mail"}
    assert queues.paused_queues(conn, "alpha", "mail") == {"mail"}
    assert queues.paused_queues(conn, "alpha", "other") == set()
    assert queues.paused_queues(conn, "beta") == set()


def test_workers_claim_nothing_of_a_paused_queue_until_it_resumes(conn: Conn) -> None:
    queues.pause_queue(conn, "alpha", "default")
    run = create(conn)
    theirs = create(conn, tenant="beta")
    assert claim(conn, run) is None
    assert claim(conn, theirs) is not None
    queues.resume_queue(conn, "alpha", "default")
    assert queues.paused_queues(conn, "alpha") == set()
    assert claim(conn, run) is not None


def test_resume_hands_back_the_tenants_queued_runs_of_that_queue_by_priority(conn: Conn) -> None:
    queues.pause_queue(conn, "alpha", "default")
    low, high = create(conn, priority=9), create(conn, priority=1)
    create(conn, queue="mail")
    create(conn, tenant="beta")
    create(conn, delayed=True)
    assert [run.id for run in queues.resume_queue(conn, "alpha", "default")] == [high.id, low.id]
    assert queues.resume_queue(conn, "alpha", "default") != []  # still queued: resume is safe again


def test_run_counts_per_queue_and_status(conn: Conn) -> None:
    create(conn)
    create(conn)
    create(conn, queue="mail", delayed=True)
    create(conn, tenant="beta")
    exact = frozenset[str]()
    counts = queues.run_counts(conn, "alpha")
    assert counts == {
        "default": queues.Counts(Counter(queued=2), exact),
        "mail": queues.Counts(Counter(delayed=1), exact),
    }
    assert queues.run_counts(conn, "alpha", "mail") == {
        "mail": queues.Counts(Counter(delayed=1), exact)
    }
    assert queues.run_counts(conn, "gamma") == {}
