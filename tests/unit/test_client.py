"""The Python client: its tail (against a local websocket server that drops connections) and
the printing of a tail, its errors (problem fields, an unreachable server named by URL), and how
it finds the server and token."""

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
from runlane.client import ApiError, Client, Unreachable, find_token, server_url


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
