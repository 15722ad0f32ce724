"""Bulk cancel and retry (POST /v1/runs/cancel, /v1/runs/retry) on real Postgres and Redis: the
single-run rules applied to a selection of the caller's runs, the counts, validation, tenants."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from rq import Queue

from app import attempts
from app import bulk as bulk_changes
from app.domain import Run
from app.services import Services
from tests.integration.api import ALPHA, BETA, submit


def status(client: FlaskClient, run_id: str, headers: dict[str, str] = ALPHA) -> str:
    return str(client.get(f"/v1/runs/{run_id}", headers=headers).get_json()["status"])


def bulk(client: FlaskClient, verb: str, body: Any, headers: dict[str, str] = ALPHA) -> Any:
    response = client.post(f"/v1/runs/{verb}", json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def claim(services: Services, run_id: str) -> Run:
    with services.pool.connection() as conn:
        claimed = attempts.group_commit(
            conn, [attempts.claim_change(run_id, worker="w1", lease_s=30)]
        )[0]
    assert claimed is not None
    return claimed


def fail(services: Services, run_id: str) -> None:
    claimed = claim(services, run_id)
    with services.pool.connection() as conn:
        attempts.group_commit(conn, [attempts.fail_change(claimed, {"type": "E", "message": "x"})])


def succeed(services: Services, run_id: str) -> None:
    claimed = claim(services, run_id)
    with services.pool.connection() as conn:
        attempts.group_commit(conn, [attempts.finish_change(claimed, None)])


def event_types(client: FlaskClient, run_id: str) -> list[str]:
    events = client.get(f"/v1/runs/{run_id}/events", headers=ALPHA).get_json()["items"]
    return [event["type"] for event in events]


def rq_job_ids(services: Services, queue: str = "default", priority: int = 5) -> list[str]:
    return Queue(services.keys.rq_queue(queue, priority), connection=services.redis).job_ids


def empty_rq(services: Services) -> None:
    services.redis.delete(f"rq:queue:{services.keys.rq_queue('default', 5)}")


# ---- cancel


def test_cancel_by_ids_applies_the_single_runs_rule_to_each(
    client: FlaskClient, services: Services
) -> None:
    queued = submit(client)
    delayed = submit(client, delay_ms=60_000)
    running = submit(client, task="demo.sleep")
    claim(services, running["id"])
    done = submit(client)
    succeed(services, done["id"])
    asked = submit(client, task="demo.sleep")
    claim(services, asked["id"])
    client.post(f"/v1/runs/{asked['id']}/cancel", headers=ALPHA)  # asked before: no change
    theirs = submit(client, BETA)
    ids = [r["id"] for r in (queued, delayed, running, done, asked, theirs)]

    assert bulk(client, "cancel", {"ids": [*ids, str(uuid.uuid4())]}) == {
        "matched": 5,  # not beta's run, nor an id of no run
        "changed": 3,
    }
    assert [status(client, i) for i in ids[:5]] == [
        "cancelled", "cancelled", "running", "succeeded", "running"
    ]  # fmt: skip
    assert status(client, theirs["id"], BETA) == "queued"
    assert event_types(client, queued["id"]) == ["run.queued", "run.cancelled"]
    # the running attempt is asked to stop, as the single cancel asks it
    shown = client.get(f"/v1/runs/{running['id']}", headers=ALPHA).get_json()
    assert services.redis.exists(services.keys.cancel(running["id"], shown["attempt"]))


def test_cancel_by_filter_cancels_a_waiting_parent_and_its_children(
    client: FlaskClient, services: Services
) -> None:
    children = [{"task": "demo.echo"}, {"task": "demo.noop"}]
    parent = submit(client, task="demo.collect", children=children)
    other = submit(client, queue="elsewhere")
    beta = submit(client, BETA, task="demo.collect", children=children)

    assert bulk(client, "cancel", {"task": "demo.collect"}) == {"matched": 1, "changed": 1}
    shown = client.get(f"/v1/runs/{parent['id']}", headers=ALPHA).get_json()
    assert shown["status"] == "cancelled" and shown["children"]["cancelled"] == 2
    kids = client.get(f"/v1/runs?parent_id={parent['id']}", headers=ALPHA).get_json()["items"]
    assert {kid["status"] for kid in kids} == {"cancelled"}
    assert status(client, other["id"]) == "queued"
    assert status(client, beta["id"], BETA) == "waiting"

    # every run of the caller: what is left live is cancelled, the cancelled ones stay
    assert bulk(client, "cancel", {}) == {"matched": 4, "changed": 1}
    assert status(client, other["id"]) == "cancelled"
    assert bulk(client, "cancel", {"status": "cancelled", "queue": "default"}) == {
        "matched": 3,
        "changed": 0,
    }


def test_a_deadlock_rolls_the_whole_change_back_and_it_is_made_again(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = submit(client)
    made: list[bulk_changes.Outcome] = []
    cancel = bulk_changes._cancel

    def deadlocked_once(*args: Any) -> bulk_changes.Outcome:
        made.append(cancel(*args))
        if len(made) == 1:  # as Postgres breaks a deadlock: this transaction is rolled back
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return made[-1]

    monkeypatch.setattr(bulk_changes, "_cancel", deadlocked_once)
    assert bulk(client, "cancel", {"ids": [run["id"]]}) == {"matched": 1, "changed": 1}
    assert len(made) == 2
    assert event_types(client, run["id"]) == ["run.queued", "run.cancelled"]  # one cancel


def test_a_thousand_runs_are_cancelled_in_one_request(
    client: FlaskClient, services: Services
) -> None:
    body = {"runs": [{"task": "demo.noop"}] * 1000}
    made = client.post("/v1/runs/batch", json=body, headers=ALPHA)
    assert made.status_code == 201
    assert bulk(client, "cancel", {"status": "queued"}) == {"matched": 1000, "changed": 1000}
    listed = client.get("/v1/runs?status=queued", headers=ALPHA).get_json()["items"]
    assert listed == []


# ---- retry


def test_retry_requeues_failed_and_cancelled_runs_only_and_dispatches_them(
    client: FlaskClient, services: Services
) -> None:
    failed = submit(client)
    fail(services, failed["id"])
    cancelled = submit(client)
    client.post(f"/v1/runs/{cancelled['id']}/cancel", headers=ALPHA)
    done = submit(client)
    succeed(services, done["id"])
    queued = submit(client)
    theirs = submit(client, BETA)
    fail(services, theirs["id"])
    empty_rq(services)

    assert bulk(client, "retry", {}) == {"matched": 4, "changed": 2}
    assert status(client, failed["id"]) == status(client, cancelled["id"]) == "queued"
    assert (status(client, done["id"]), status(client, queued["id"])) == ("succeeded", "queued")
    assert status(client, theirs["id"], BETA) == "failed"
    assert sorted(rq_job_ids(services)) == sorted([failed["id"], cancelled["id"]])
    shown = client.get(f"/v1/runs/{failed['id']}", headers=ALPHA).get_json()
    assert (shown["error"], shown["attempt"]) == (None, 1)
    assert event_types(client, failed["id"])[-1] == "run.queued"

    assert bulk(client, "retry", {"status": "failed"}) == {"matched": 0, "changed": 0}
    assert bulk(client, "retry", {"ids": [theirs["id"]]}) == {"matched": 0, "changed": 0}


def test_retry_of_a_parent_reruns_what_failed_and_waits_again(
    client: FlaskClient, services: Services
) -> None:
    children = [{"task": "demo.echo"}, {"task": "demo.noop"}]
    parent = submit(client, task="demo.collect", children=children, on_child_failure="fail")
    kids = client.get(f"/v1/runs?parent_id={parent['id']}", headers=ALPHA).get_json()["items"]
    good, bad = sorted(kids, key=lambda kid: kid["task"])  # demo.echo, demo.noop
    succeed(services, good["id"])
    fail(services, bad["id"])  # fails the parent at once (ChildFailed)
    assert status(client, parent["id"]) == "failed"
    alone = submit(client, task="demo.collect", children=[{"task": "demo.echo"}])
    (only,) = client.get(f"/v1/runs?parent_id={alone['id']}", headers=ALPHA).get_json()["items"]
    succeed(services, only["id"])
    assert status(client, alone["id"]) == "queued"
    fail(services, alone["id"])  # the parent's own task failed; its child succeeded
    empty_rq(services)

    assert bulk(client, "retry", {"task": "demo.collect"}) == {"matched": 2, "changed": 2}
    shown = client.get(f"/v1/runs/{parent['id']}", headers=ALPHA).get_json()
    assert shown["status"] == "waiting" and shown["children"]["pending"] == 1
    assert (status(client, good["id"]), status(client, bad["id"])) == ("succeeded", "queued")
    assert event_types(client, parent["id"])[-1] == "run.waiting"
    assert status(client, alone["id"]) == "queued"  # its child succeeded: it runs again alone
    assert sorted(rq_job_ids(services)) == sorted([bad["id"], alone["id"]])


def test_retry_of_a_nested_flow_goes_from_the_bottom_up(
    client: FlaskClient, services: Services
) -> None:
    middle = {"task": "demo.collect", "children": [{"task": "demo.echo"}]}
    root = submit(client, task="demo.collect", children=[middle])
    (mid,) = client.get(f"/v1/runs?parent_id={root['id']}", headers=ALPHA).get_json()["items"]
    (leaf,) = client.get(f"/v1/runs?parent_id={mid['id']}", headers=ALPHA).get_json()["items"]
    fail(services, leaf["id"])  # fails the middle, which fails the root
    assert status(client, root["id"]) == status(client, mid["id"]) == "failed"
    empty_rq(services)

    assert bulk(client, "retry", {"ids": [root["id"]]}) == {"matched": 1, "changed": 1}
    assert (status(client, root["id"]), status(client, mid["id"])) == ("waiting", "waiting")
    assert status(client, leaf["id"]) == "queued"
    assert rq_job_ids(services) == [leaf["id"]]


# ---- validation and routing


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": ["not-a-uuid"]}, "ids[0]"),
        ({"ids": "abc"}, "ids"),
        ({"ids": [str(uuid.uuid4())], "status": "failed"}, "ids"),
        ({"status": "finished"}, "status"),
        ({"queue": 5}, "queue"),
        ({"colour": "red"}, "colour"),
        ({"ids": [str(uuid.uuid4())] * 10_001}, "ids"),
        ([1], "body"),
    ],
)
@pytest.mark.parametrize("verb", ["cancel", "retry"])
def test_a_bad_selection_is_422_naming_the_field(
    client: FlaskClient, verb: str, body: Any, field: str
) -> None:
    response = client.post(f"/v1/runs/{verb}", json=body, headers=ALPHA)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert field in {error["field"] for error in response.get_json()["errors"]}


def test_the_bulk_routes_are_not_run_ids(client: FlaskClient) -> None:
    for verb in ("cancel", "retry"):
        response = client.get(f"/v1/runs/{verb}", headers=ALPHA)
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
        assert client.post(f"/v1/runs/{verb}", data=b"{", headers=ALPHA).status_code == 400
        assert client.post(f"/v1/runs/{verb}", json={}).status_code == 401
