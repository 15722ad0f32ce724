"""schemathesis against /openapi.json, with every check it has, on the real app over real Redis
and Postgres: whatever it sends, good or malformed, the answer is never a 5xx and is always one
that the document promises (status, content type, headers, body).

It runs schemathesis's engine, what `schemathesis run` runs (every phase: examples, coverage,
fuzzing, stateful), rather than `schema.parametrize()`: the schema comes from the `app` fixture,
and the fixture loader (`schemathesis.pytest.from_fixture`) does not work with pytest >= 9.2. The
app is served over real HTTP on a local port, not called as WSGI: schemathesis's WSGI transport
cannot send the requests of its `ignored_auth` check (it hands Werkzeug a `requests` option)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from schemathesis.engine import Status, events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from werkzeug.serving import make_server

TOKEN = "tok-alpha"  # tests.conftest.TOKENS: tenant alpha
# The same cases on every run, so that a red CI run is one anyone can reproduce; set
# RUNLANE_SCHEMATHESIS_RANDOM=1 (and more examples) to explore new ones.
EXAMPLES_PER_OPERATION = int(os.environ.get("RUNLANE_SCHEMATHESIS_EXAMPLES", "15"))
DETERMINISTIC = not os.environ.get("RUNLANE_SCHEMATHESIS_RANDOM")
KEY = re.compile(r"[!-~](?:[ -~]*[!-~])?")
WEBHOOK_URL = re.compile(r"https?://[^\x00]+", re.S)


def before_call(context: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    """A client never reuses an Idempotency-Key for another request (the contract answers 422):
    each valid generated key is made the key of its own body. Replays still happen."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and KEY.fullmatch(key):
        body = json.dumps(case.body, sort_keys=True, default=str).encode()
        case.headers["Idempotency-Key"] = f"{key[:200]}.{hashlib.sha256(body).hexdigest()[:16]}"
    # Whether a webhook URL's host resolves to a public address is no part of a schema: a
    # generated `http://0` is schema-valid and refused (422). Such a URL is made one that
    # resolves (a public IP literal: nothing connects to it at create); others stay as sent.
    url = case.body.get("url") if isinstance(case.body, dict) else None
    if case.path == "/v1/webhooks" and isinstance(url, str) and WEBHOOK_URL.fullmatch(url):
        case.body["url"] = "https://93.184.215.14/" + hashlib.sha256(url.encode()).hexdigest()


@pytest.fixture
def unique_keys() -> Iterator[None]:
    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(before_call, "before_call")
    yield
    GLOBAL_HOOK_DISPATCHER.unregister(before_call)


def is_websocket(ctx: Any) -> bool:
    # A WebSocket route, documented as a GET: over plain HTTP its only answers are the refusals
    # before the upgrade (401, 404, 400, then 426), which test_openapi_agrees covers; what it
    # documents, the messages after the upgrade, no plain HTTP request can reach.
    return "x-websocket" in ctx.operation.definition.raw


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    """The app served on a free local port, one thread per request."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="schemathesis-web", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("unique_keys")
def test_the_api_keeps_to_its_document(base_url: str) -> None:
    config = schemathesis.Config.from_dict(
        {
            # by scheme, so that schemathesis can also leave the token out (and expect 401)
            "auth": {"openapi": {"bearer": {"bearer": TOKEN}, "token": {"api_key": TOKEN}}},
            "generation": {
                "mode": "all",  # valid requests and every kind of broken one
                "max-examples": EXAMPLES_PER_OPERATION,
                "database": "none",  # no examples saved between runs
                "deterministic": DETERMINISTIC,
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    problems, tested = run(schema.exclude(is_websocket))
    assert not problems, "\n\n".join(problems)
    documented = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method, op in item.items()
        if "x-websocket" not in op
    }
    # every operation was tested, but the document itself (schemathesis does not fuzz its source)
    assert documented - tested == {"GET /openapi.json"}, documented - tested


def run(schema: Any) -> tuple[list[str], set[str]]:
    """Every failed check and every error of a whole run; the operations it tested."""
    problems: list[str] = []
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested.add(event.recorder.label)
            if event.status is not Status.SUCCESS:
                problems += _failures(event)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"{getattr(event, 'label', '')}: {_error(event)}")
    return problems, tested


def _failures(event: events.ScenarioFinished) -> list[str]:
    found = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            found.append(
                f"{event.recorder.label} [{event.phase.value}] {check.name}: {failure.title}\n"
                f"{failure.message}\n{check.failure_info.code_sample}\n"
                f"-> {_answer(event.recorder, failure.case_id or case_id)}"
            )
    if event.status is Status.ERROR and not found:
        found.append(f"{event.recorder.label} [{event.phase.value}]: error ({event.skip_reason})")
    return found


def _answer(recorder: Any, case_id: str) -> str:
    response = recorder.find_response(case_id=case_id)
    if response is None:
        return "no response"
    return f"{response.status_code} {response.content[:300]!r}"


def _error(event: events.NonFatalError | events.FatalError) -> str:
    if isinstance(event, events.NonFatalError):
        return event.info.format()
    return repr(event.exception)
