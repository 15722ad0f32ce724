"""A small Python client of the runlane HTTP API, with a run tail that resumes by itself, and the
printing of a tail that `runlane tail` uses."""

from __future__ import annotations

import builtins
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

TERMINAL = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
RETRY_STATUSES = frozenset({502, 503, 504})
BAR_WIDTH = 30


class ApiError(Exception):
    """The API answered with an error: `problem` is its application/problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title") or "error"
        detail = problem.get("detail")
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))


class Client:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # --- runs ----------------------------------------------------------------------------------

    def submit(
        self, task: str, input: Any = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """POST /v1/runs; `fields` are the optional ones (queue, priority, delay_ms, ...)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"task": task, "input": input, **fields}
        return self._call("POST", "/v1/runs", body, headers=headers)

    def get(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/runs/{_quote(run_id)}")

    def list(self, **filters: Any) -> dict[str, Any]:
        """GET /v1/runs with status, queue, task, limit, cursor: {"items", "next_cursor"}."""
        return self._call("GET", "/v1/runs", params=filters)

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/cancel")

    def retry(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/retry")

    def events(
        self, run_id: str, after: int = 0, limit: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        params = {"after": after, "limit": limit}
        return self._call("GET", f"/v1/runs/{_quote(run_id)}/events", params=params)["items"]

    def queues(self) -> dict[str, Any]:
        return self._call("GET", "/v1/queues")

    def pause(self, queue: str) -> dict[str, Any]:
        """Holds this tenant's runs in `queue` (running attempts finish) until resume."""
        return self._call("POST", f"/v1/queues/{_quote(queue)}/pause")

    def resume(self, queue: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/queues/{_quote(queue)}/resume")

    # --- the live tail -------------------------------------------------------------------------

    def tail(
        self, run_id: str, after: int = 0, *, give_up_after: float = 60
    ) -> Iterator[dict[str, Any]]:
        """The run's events with seq > after, as they happen, ending after the terminal event.
        A dropped connection is resumed with after=<last seq>, so nothing repeats or goes
        missing; it gives up (ConnectionError) after `give_up_after` s without a connection."""
        last, backoff, failing_since = after, 0.2, None
        while True:
            try:
                with connect(self._tail_url(run_id, last), open_timeout=10,
                             additional_headers=self._auth()) as ws:  # fmt: skip
                    failing_since, backoff = None, 0.2
                    for message in ws:
                        event = json.loads(message)
                        if event["seq"] <= last:
                            continue
                        last = event["seq"]
                        yield event
                        if event["type"] in TERMINAL:
                            return
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status not in RETRY_STATUSES:
                    raise ApiError(status, _problem(exc.response.body)) from None
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
                pass
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > give_up_after:
                raise ConnectionError(f"could not reach {self.base_url} for {give_up_after:.0f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _tail_url(self, run_id: str, after: int) -> str:
        scheme, rest = self.base_url.split("://", 1)
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest}/v1/runs/{_quote(run_id)}/tail?after={after}"

    # --- plumbing ------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        for name, value in {**self._auth(), **(headers or {})}.items():
            request.add_header(name, value)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _problem(exc.read())) from None


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _problem(raw: bytes | bytearray | None) -> dict[str, Any]:
    try:
        found = json.loads(raw or b"{}")
    except ValueError:
        return {"detail": (raw or b"").decode(errors="replace")[:200]}
    return found if isinstance(found, dict) else {"detail": str(found)}


# --- printing a tail ----------------------------------------------------------------------------


def render_tail(events: Iterable[dict[str, Any]], out: TextIO) -> dict[str, Any] | None:
    """Print events as they come: progress as a bar redrawn in place (one line each when `out`
    is not a terminal), everything else as a line, and a last line saying how the run ended.
    Returns the terminal event (None if the events stopped before one)."""
    live = out.isatty()
    bar_shown = False
    for event in events:
        kind, data = event["type"], event.get("data") or {}
        if kind == "run.progress" and live:
            out.write("\r\x1b[2K" + progress_bar(data))
            bar_shown = True
        else:
            if bar_shown:
                out.write("\n")
                bar_shown = False
            line = final_line(event) if kind in TERMINAL else event_line(event)
            out.write(line + "\n")
        out.flush()
        if kind in TERMINAL:
            return event
    if bar_shown:
        out.write("\n")
    return None


def progress_bar(data: dict[str, Any]) -> str:
    percent = max(0.0, min(100.0, float(data.get("percent") or 0)))
    filled = round(BAR_WIDTH * percent / 100)
    message = data.get("message") or ""
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f}% {message}".rstrip()


def event_line(event: dict[str, Any]) -> str:
    kind, data = event["type"], event.get("data") or {}
    at = str(event.get("at") or "")[11:23]  # HH:MM:SS.mmm of an RFC 3339 time
    if kind == "run.progress":
        detail = f"{data.get('percent')}% {data.get('message') or ''}".rstrip()
    elif kind == "run.log":
        detail = f"[{data.get('level', 'info')}] {data.get('message', '')}"
    else:
        detail = " ".join(f"{k}={json.dumps(v)}" for k, v in data.items())
    return f"{at} #{event['seq']} {kind} {detail}".rstrip()


def final_line(event: dict[str, Any]) -> str:
    kind, data = event["type"], event.get("data") or {}
    if kind == "run.succeeded":
        return f"succeeded: result {json.dumps(data.get('result'))}"
    if kind == "run.failed":
        error = data.get("error") or {}
        attempt = data.get("attempt")
        return f"failed after attempt {attempt}: {error.get('type')}: {error.get('message')}"
    return f"cancelled: {data.get('reason') or 'cancelled'}"
