"""The Python client: its tail (against a local websocket server that drops connections) and
the printing of a tail, its errors (problem fields, an unreachable server named by URL), batches
and flows (against a local fake of their endpoints), and how it finds the server and token."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.server import ServerConnection, serve

from app.config import ConfigError
from runlane.cli.output import Style, final_line, progress_bar, render_tail
from runlane.client import (
    BATCH_MAX,
    ApiError,
    BatchRefused,
    Client,
    Unreachable,
    find_token,
    server_url,
)


def event(seq: int, kind: str = "run.progress", **data: Any) -> dict[str, Any]:
    return {"run_id": "r1", "seq": seq, "type": kind, "at": "2024-05-01T12:00:01.250000Z",
            "data": data}  # fmt: skip


class FlakyServer:
    """Serves seq after..10 of a run, dropping the connection after 3 messages each time
    (and repeating the last one it sent, as a careless server might)."""

    def __init__(self) -> None:
        self.afters: list[int] = []
        self.tokens: list[str | None] = []

    def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if "missing" in ws.request.path:
            return
        after = int(parse_qs(urlsplit(ws.request.path).query)["after"][0])
        self.afters.append(after)
        self.tokens.append(ws.request.headers.get("Authorization"))
        start = max(1, after)  # includes `after` itself: the client must skip it
        for seq in range(start, min(start + 3, 11)):
            kind = "run.succeeded" if seq == 10 else "run.progress"
            ws.send(json.dumps(event(seq, kind, percent=seq * 10)))
        if start + 3 > 10:
            ws.close(1000)


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyServer, str]]:
    server = FlakyServer()
    with serve(server.handler, "127.0.0.1", 0) as ws_server:
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        port = ws_server.socket.getsockname()[1]
        yield server, f"http://127.0.0.1:{port}"
        ws_server.shutdown()


def test_tail_resumes_after_the_last_seq_and_stops_at_the_terminal_event(flaky) -> None:
    server, base = flaky
    events = list(Client(base, "tok").tail("r1", after=0))
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert server.afters == [0, 3, 5, 7, 9]  # each resend of `after` itself was skipped
    assert set(server.tokens) == {"Bearer tok"}


def test_tail_raises_the_problem_of_a_refused_upgrade() -> None:
    class Refuse(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = b'{"title": "Not Found", "status": 404, "detail": "no such run"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ApiError, match="404 Not Found: no such run") as raised:
            list(Client(f"http://127.0.0.1:{httpd.server_port}", "tok").tail("nope"))
        assert raised.value.status == 404
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tail_gives_up_when_nothing_answers() -> None:
    with pytest.raises(ConnectionError):
        list(Client("http://127.0.0.1:9", "tok").tail("r1", give_up_after=0.5))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_tail_on_a_terminal_redraws_one_progress_bar_and_ends_clearly() -> None:
    out = Terminal()
    events = [event(1, "run.started", attempt=1, worker="w1"),
              event(2, percent=50, message="step 1/2"), event(3, percent=100, message="step 2/2"),
              event(4, "run.succeeded", result={"steps": 2})]  # fmt: skip
    ended = render_tail(events, out)
    assert ended == events[-1]
    lines = out.getvalue().split("\n")
    assert lines[0] == '12:00:01.250 #1 run.started attempt=1 worker="w1"'
    assert lines[1].count("\r") == 2 and lines[1].endswith("100.0% step 2/2")
    assert lines[2] == 'succeeded: result {"steps": 2}'


def test_render_tail_into_a_file_prints_a_line_per_event() -> None:
    out = io.StringIO()
    failed = event(2, "run.failed", attempt=2, error={"type": "Boom", "message": "bad"})
    render_tail([event(1, percent=25, message="a"), failed], out)
    assert out.getvalue().splitlines() == [
        "12:00:01.250 #1 run.progress 25% a",
        "failed after attempt 2: Boom: bad",
    ]


def test_an_interrupted_tail_ends_the_progress_bar_line() -> None:
    def interrupted() -> Any:
        yield event(1, percent=50, message="half")
        raise KeyboardInterrupt

    out = Terminal()
    with pytest.raises(KeyboardInterrupt):
        render_tail(interrupted(), out)
    assert out.getvalue().endswith("50.0% half\n")


def test_progress_bar_and_final_lines() -> None:
    assert progress_bar({"percent": 50, "message": "half"}).startswith("[" + "#" * 15 + "." * 15)
    assert progress_bar({"percent": 500}).startswith("[" + "#" * 30 + "]")
    assert final_line(event(9, "run.cancelled", reason="user")) == "cancelled: user"
    assert final_line(event(9, "run.succeeded", result=1), Style(True)).startswith("\x1b[32m")


class Answer(BaseHTTPRequestHandler):
    """Answers every request with the status, content type and body of its path's entry."""

    protocol_version = "HTTP/1.1"
    answers: dict[str, tuple[int, str, bytes]] = {
        "/v1/runs": (422, "application/problem+json", json.dumps({
            "type": "https://runlane.dev/problems/validation", "title": "Unprocessable Entity",
            "status": 422, "detail": "invalid fields: task",
            "errors": [{"field": "task", "message": "unknown task 'nope.task'"}]}).encode()),
        "/v1/queues": (200, "text/html", b"<html>not runlane</html>"),
    }  # fmt: skip

    def _answer(self) -> None:
        status, kind, body = self.answers[self.path]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815 - the http.server API

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_an_error_carries_the_problem_and_its_fields(answering: str) -> None:
    with pytest.raises(ApiError) as raised:
        Client(answering, "tok").submit("nope.task")
    assert raised.value.status == 422
    assert str(raised.value) == "422 Unprocessable Entity: invalid fields: task"
    assert raised.value.fields == [("task", "unknown task 'nope.task'")]


def test_an_answer_that_is_not_json_is_an_error_naming_the_server(answering: str) -> None:
    with pytest.raises(ApiError, match=f"{answering} did not answer JSON"):
        Client(answering, "tok").queues()


def test_an_unreachable_server_is_named_by_its_url() -> None:
    with pytest.raises(
        Unreachable, match=r"cannot reach http://127.0.0.1:9 \(Connection refused\)"
    ):
        Client("http://127.0.0.1:9", "tok").get("r1")


def test_the_server_is_the_given_url_else_runlane_url_else_port_else_8000() -> None:
    assert server_url("http://a:1", {"RUNLANE_URL": "http://b:2", "PORT": "3"}) == "http://a:1"
    assert server_url(None, {"RUNLANE_URL": "https://b:2", "PORT": "3"}) == "https://b:2"
    assert server_url(None, {"PORT": "3"}) == "http://127.0.0.1:3"
    assert server_url(None, {}) == "http://127.0.0.1:8000"
    with pytest.raises(ConfigError, match="PORT"):
        server_url(None, {"PORT": "eighty"})
    with pytest.raises(ConfigError, match="http:// or https://"):
        server_url("localhost:8000", {})


def test_the_token_is_the_given_one_else_runlane_token_else_the_dev_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"RUNLANE_HOME": str(home)}
    with pytest.raises(ConfigError, match=f"no dev token at {home / 'dev-token'}"):
        find_token(None, env)
    assert not home.exists(), "the dev token is read, never created"
    home.mkdir()
    (home / "dev-token").write_text("dev_abc\n")
    assert find_token(None, env) == ("dev_abc", str(home / "dev-token"))
    assert find_token(None, {**env, "RUNLANE_TOKEN": "t1"}) == ("t1", "RUNLANE_TOKEN")
    assert find_token("t2", {**env, "RUNLANE_TOKEN": "t1"}) == ("t2", "--token")
    client = Client.from_env(None, None, {**env, "PORT": "9999"})
    assert (client.base_url, client.token, client.token_from) == (
        "http://127.0.0.1:9999", "dev_abc", str(home / "dev-token"))  # fmt: skip


# --- batches and flows --------------------------------------------------------------------------

Seen = list[tuple[str, str, dict[str, str], Any]]  # method, path, headers, JSON body


class FlowApi(BaseHTTPRequestHandler):
    """Batches, flows and a parent's children, as the API answers them: a batch's runs get ids
    from their inputs and one with priority 0 is refused, naming it; a flow's parent answers
    its body; the five children of parent p1 are listed newest first, two a page."""

    protocol_version = "HTTP/1.1"
    seen: Seen
    CHILDREN = [{"id": f"c{i}", "task": "demo.echo", "parent_id": "p1"} for i in range(5, 0, -1)]

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, dict(self.headers.items()), body))
        if self.path == "/v1/runs":
            self._send(201, {"id": "p1", "status": "waiting", **body})
            return
        bad = [i for i, run in enumerate(body["runs"]) if run.get("priority") == 0]
        if bad:
            errors = [{"field": f"runs[{i}].priority", "message": "at least 1"} for i in bad]
            fields = ", ".join(error["field"] for error in errors)
            self._send(422, {"title": "Unprocessable Entity", "status": 422,
                             "detail": f"invalid fields: {fields}", "errors": errors})  # fmt: skip
            return
        self._send(201, {"items": [{"id": f"r{run['input']}", **run} for run in body["runs"]]})

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.seen.append(("GET", self.path, dict(self.headers.items()), None))
        start = int(parse_qs(urlsplit(self.path).query).get("cursor", ["0"])[0])
        more = start + 2 < len(self.CHILDREN)
        self._send(200, {"items": self.CHILDREN[start : start + 2],
                         "next_cursor": str(start + 2) if more else None})  # fmt: skip

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flow_api() -> Iterator[tuple[Client, Seen]]:
    """A client of a FlowApi of this test's own, and the requests that server saw."""
    seen: Seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Recording", (FlowApi,), {"seen": seen}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Client(f"http://127.0.0.1:{httpd.server_port}", "tok"), seen
    httpd.shutdown()
    httpd.server_close()


def bodies(count: int) -> list[dict[str, Any]]:
    return [{"task": "demo.echo", "input": i} for i in range(count)]


def test_submit_many_makes_the_runs_in_one_request_with_the_idempotency_key(
    flow_api: tuple[Client, Seen],
) -> None:
    client, seen = flow_api
    made = client.submit_many(bodies(3), idempotency_key="batch-1")
    assert [run["id"] for run in made] == ["r0", "r1", "r2"]
    ((method, path, headers, body),) = seen
    assert (method, path, body) == ("POST", "/v1/runs/batch", {"runs": bodies(3)})
    assert headers["Idempotency-Key"] == "batch-1"
    assert client.submit_many([]) == [] and len(seen) == 1, "no runs: no request"


def test_submit_many_sends_more_than_a_batch_in_order_in_requests_of_a_batch(
    flow_api: tuple[Client, Seen],
) -> None:
    client, seen = flow_api
    made = client.submit_many(bodies(2 * BATCH_MAX + 5))
    assert [run["id"] for run in made] == [f"r{i}" for i in range(2 * BATCH_MAX + 5)]
    assert [len(body["runs"]) for _, _, _, body in seen] == [BATCH_MAX, BATCH_MAX, 5]
    assert all("Idempotency-Key" not in headers for _, _, headers, _ in seen)


def test_submit_many_with_a_key_never_splits_the_runs_into_several_requests(
    flow_api: tuple[Client, Seen],
) -> None:
    client, seen = flow_api
    with pytest.raises(ValueError, match=f"at most {BATCH_MAX} runs, not {BATCH_MAX + 1}"):
        client.submit_many(bodies(BATCH_MAX + 1), idempotency_key="k")
    assert seen == []
    assert len(client.submit_many(bodies(BATCH_MAX), idempotency_key="k")) == BATCH_MAX


def test_a_refused_request_of_a_split_batch_says_what_was_made_and_which_runs_it_refused(
    flow_api: tuple[Client, Seen],
) -> None:
    client, seen = flow_api
    runs = bodies(BATCH_MAX + 10)
    runs[BATCH_MAX + 3]["priority"] = runs[-1]["priority"] = 0
    with pytest.raises(BatchRefused) as raised:
        client.submit_many(runs)
    refused = raised.value
    assert isinstance(refused, ApiError) and refused.status == 422 and len(seen) == 2
    assert (refused.offset, len(refused.made)) == (BATCH_MAX, BATCH_MAX)
    assert refused.made[-1]["id"] == f"r{BATCH_MAX - 1}"
    assert refused.fields == [(f"runs[{BATCH_MAX + 3}].priority", "at least 1"),
                              (f"runs[{BATCH_MAX + 9}].priority", "at least 1")]  # fmt: skip
    assert str(refused) == (
        "422 Unprocessable Entity: invalid fields: "
        f"runs[{BATCH_MAX + 3}].priority, runs[{BATCH_MAX + 9}].priority"
    )
    with pytest.raises(BatchRefused) as first:
        client.submit_many([{"task": "demo.echo", "input": 0, "priority": 0}])
    assert first.value.made == [] and first.value.fields[0][0] == "runs[0].priority"


def test_submit_flow_sends_the_parent_with_its_children(flow_api: tuple[Client, Seen]) -> None:
    client, seen = flow_api
    children = [{"task": "demo.echo", "input": 1},
                {"task": "demo.collect", "children": [{"task": "demo.noop"}]}]  # fmt: skip
    parent = client.submit_flow("demo.collect", children, idempotency_key="f1", priority=2)
    assert parent["status"] == "waiting"
    ((_, path, headers, body),) = seen
    assert path == "/v1/runs" and headers["Idempotency-Key"] == "f1"
    assert body == {"task": "demo.collect", "input": None, "children": children,
                    "on_child_failure": "fail", "priority": 2}  # fmt: skip
    client.submit_flow("demo.collect", children[:1], on_child_failure="ignore", input={"a": 1})
    assert (seen[1][3]["on_child_failure"], seen[1][3]["input"]) == ("ignore", {"a": 1})
    assert "Idempotency-Key" not in seen[1][2]


def test_children_follows_every_page_and_gives_them_in_the_order_given(
    flow_api: tuple[Client, Seen],
) -> None:
    client, seen = flow_api
    assert [run["id"] for run in client.children("p1")] == ["c1", "c2", "c3", "c4", "c5"]
    queries = [parse_qs(urlsplit(path).query) for _, path, _, _ in seen]
    assert [query.get("cursor") for query in queries] == [None, ["2"], ["4"]]
    assert all(query["parent_id"] == ["p1"] and query["limit"] == ["200"] for query in queries)
