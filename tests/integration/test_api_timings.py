"""A run's timings and eta (contract §6) as the API shows them, on real Postgres and Redis."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from app import attempts, flows, runs
from app.domain import Run
from app.services import Services
from tests.helpers import wait_for
from tests.integration.api import ALPHA, BETA, submit


def get(client: FlaskClient, run_id: str, headers: dict[str, str] = ALPHA) -> Any:
    response = client.get(f"/v1/runs/{run_id}", headers=headers)
    assert response.status_code == 200
    return response.get_json()


def claim(services: Services, run_id: str) -> Run:
    with services.pool.connection() as conn:
        claimed = attempts.group_commit(
            conn, [attempts.claim_change(run_id, worker="w1", lease_s=30)]
        )[0]
    assert claimed is not None
    return claimed


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_queued_run_has_only_queued_ms_and_no_eta(client: FlaskClient) -> None:
    run = submit(client)
    assert run["timings"] == {"queued_ms": 0}  # dispatched in the transaction that made it
    assert run["eta"] is None
    assert get(client, run["id"])["timings"] == {"queued_ms": 0}
    batch = client.post("/v1/runs/batch", json={"runs": [{"task": "demo.echo"}] * 3}, headers=ALPHA)
    assert [item["timings"] for item in batch.get_json()["items"]] == [{"queued_ms": 0}] * 3


def test_a_delayed_run_counts_from_its_promotion(client: FlaskClient, services: Services) -> None:
    run = submit(client, delay_ms=150)
    assert run["timings"] == {} and get(client, run["id"])["timings"] == {}

    def promoted() -> list[Run]:
        with services.pool.connection() as conn:
            return runs.promote_due(conn)

    wait_for(promoted, timeout=5, message="the delayed run promoted")
    shown = get(client, run["id"])
    assert shown["status"] == "queued"
    assert set(shown["timings"]) == {"queued_ms"} and shown["timings"]["queued_ms"] >= 150


def test_a_flows_parent_counts_from_its_dispatch_once_its_children_are_done(
    client: FlaskClient, services: Services
) -> None:
    parent = submit(client, task="demo.collect", children=[{"task": "demo.echo"}])
    assert parent["timings"] == {}  # waiting: never dispatched yet
    (child,) = client.get(f"/v1/runs?parent_id={parent['id']}", headers=ALPHA).get_json()["items"]
    claimed = claim(services, child["id"])
    with services.pool.connection() as conn:
        attempts.group_commit(conn, [attempts.finish_change(claimed, None)])
        flows.after_change(conn, services.redis, services.keys, [claimed])  # hands it to RQ
    shown = get(client, parent["id"])
    assert shown["status"] == "queued" and set(shown["timings"]) == {"queued_ms"}


def test_a_finished_run_has_every_part_and_a_retry_keeps_its_first_dispatch(
    client: FlaskClient, services: Services
) -> None:
    run = submit(client)
    claimed = claim(services, run["id"])
    with services.pool.connection() as conn:
        attempts.group_commit(conn, [attempts.fail_change(claimed, {"type": "E", "message": "x"})])
        conn.execute(  # the run went through its states slowly, in milliseconds that show
            "UPDATE runs SET first_dispatched_at = created_at + interval '5 ms',"
            " started_at = created_at + interval '20 ms', finished_at = created_at + interval '1 s'"
            " WHERE id = %s",
            (run["id"],),
        )
    shown = get(client, run["id"])
    assert shown["timings"] == {"queued_ms": 5, "started_ms": 20, "finished_ms": 1000}
    assert shown["eta"] is None  # not running

    retried = client.post(f"/v1/runs/{run['id']}/retry", headers=ALPHA).get_json()
    assert retried["timings"] == {"queued_ms": 5}  # the first dispatch ever; no attempt yet


def test_a_running_run_with_progress_has_an_eta_from_its_rate(
    client: FlaskClient, services: Services
) -> None:
    run = submit(client, task="demo.progress")
    claimed = claim(services, run["id"])
    assert get(client, run["id"])["eta"] is None  # no progress, no history of the task
    with services.pool.connection() as conn:
        attempts.record_progress(conn, claimed, 25, "a quarter")
        # started 30 s ago: a quarter done in 30 s, so it should end 120 s after its start
        conn.execute(
            "UPDATE runs SET started_at = now() - interval '30 s' WHERE id = %s", (run["id"],)
        )
    shown = get(client, run["id"])
    started, eta = at(shown["started_at"]), at(shown["eta"])
    assert shown["status"] == "running" and "started_ms" in shown["timings"]
    assert timedelta(seconds=119) < eta - started < timedelta(seconds=125)


def test_without_progress_the_eta_is_the_median_of_the_tasks_recent_successes(
    client: FlaskClient, services: Services
) -> None:
    durations = [1, 2, 3, 100]  # median 2.5 s
    for seconds in durations:
        done = submit(client, task="demo.sleep")
        claimed = claim(services, done["id"])
        with services.pool.connection() as conn:
            attempts.group_commit(conn, [attempts.finish_change(claimed, None)])
            conn.execute(
                "UPDATE runs SET started_at = finished_at - make_interval(secs => %s)"
                " WHERE id = %s",
                (seconds, done["id"]),
            )
    other = submit(client, BETA, task="demo.sleep")  # another tenant's history does not count
    with services.pool.connection() as conn:
        attempts.group_commit(conn, [attempts.finish_change(claim(services, other["id"]), None)])

    running = submit(client, task="demo.sleep")
    claim(services, running["id"])
    shown = get(client, running["id"])
    assert at(shown["eta"]) - at(shown["started_at"]) == timedelta(seconds=2.5)

    listed = client.get("/v1/runs?status=running", headers=ALPHA).get_json()["items"]
    assert [item["eta"] for item in listed] == [shown["eta"]]
    beta_running = submit(client, BETA, task="demo.sleep")
    claim(services, beta_running["id"])
    # beta's one success took about no time: its median is its own
    beta_shown = get(client, beta_running["id"], BETA)
    assert at(beta_shown["eta"]) - at(beta_shown["started_at"]) < timedelta(seconds=1)


def test_a_running_run_of_a_task_without_history_has_no_eta(
    client: FlaskClient, services: Services
) -> None:
    run = submit(client, task="demo.noop")
    claim(services, run["id"])
    shown = get(client, run["id"])
    assert shown["status"] == "running" and shown["eta"] is None
    assert set(shown["timings"]) == {"queued_ms", "started_ms"}
