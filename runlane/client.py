"""A small Python client of the runlane HTTP API, with a run tail that resumes by itself, and
how the client finds the server and its token the way the stack was started."""

from __future__ import annotations

import builtins
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from app.config import ClientSettings, ConfigError
from runlane.errors import ApiError, BatchRefused, Unreachable, problem_of, reason_of

__all__ = [
    "ApiError", "BatchRefused", "Client", "Reply", "Unreachable", "find_token", "server_url",
]  # fmt: skip
TERMINAL = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
RETRY_STATUSES = frozenset({502, 503, 504})
BATCH_MAX = 1000  # runs of one POST /v1/runs/batch (contract §5.5)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


class Client:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_from = "the caller"  # said when the server refuses the token

    @classmethod
    def from_env(
        cls, url: str | None = None, token: str | None = None, env: Mapping[str, str] | None = None
    ) -> Client:
        """The server and token given, else as the environment names them (see server_url and
        find_token). ConfigError when there is no token to be found or the URL is not http(s)."""
        env = os.environ if env is None else env
        found, token_from = find_token(token, env)
        client = cls(server_url(url, env), found)
        client.token_from = token_from
        return client

    # --- runs ----------------------------------------------------------------------------------

    def submit(
        self, task: str, input: Any = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """POST /v1/runs; `fields` are the optional ones (queue, priority, delay_ms, ...)."""
        body: dict[str, Any] = self.submit_reply(
            task, input, idempotency_key=idempotency_key, **fields
        ).body
        return body

    def submit_reply(
        self, task: str, input: Any = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> Reply:
        """As submit, with the status and headers (`idempotent-replayed`, `deduplicated`)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"task": task, "input": input, **fields}
        return self.request("POST", "/v1/runs", body, headers=headers)

    def submit_many(
        self, runs: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """POST /v1/runs/batch: the runs made, in the order of their bodies (none for none).
        More than BATCH_MAX go in requests of BATCH_MAX, each all or nothing: a refused one
        raises BatchRefused, whose `made` are the runs of the requests before it. One
        idempotency_key stands for one request, so with a key more than BATCH_MAX is a
        ValueError rather than requests that a retry could not replay as a whole."""
        if idempotency_key and len(runs) > BATCH_MAX:
            raise ValueError(
                f"an idempotency key covers one batch of at most {BATCH_MAX} runs, not "
                f"{len(runs)}: split them and give each part a key of its own"
            )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        made: builtins.list[dict[str, Any]] = []
        for offset in range(0, len(runs), BATCH_MAX):
            body = {"runs": builtins.list(runs[offset : offset + BATCH_MAX])}
            try:
                items = self._call("POST", "/v1/runs/batch", body, headers=headers)["items"]
            except ApiError as exc:
                raise BatchRefused(exc, offset, made) from None
            made.extend(items)
        return made

    def submit_flow(
        self,
        task: str,
        children: Sequence[Mapping[str, Any]],
        *,
        on_child_failure: str = "fail",
        input: Any = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """POST /v1/runs of a parent that waits for its children (run bodies, which may have
        children of their own) and then runs `task` (contract §5.4). on_child_failure "fail"
        fails it at the first failed child, "ignore" runs it whatever they did."""
        return self.submit(
            task,
            input,
            idempotency_key=idempotency_key,
            children=builtins.list(children),
            on_child_failure=on_child_failure,
            **fields,
        )

    def children(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """Every child of a run, in the order the parent was given them: the API lists them
        newest first, and a flow's children are made in the order given."""
        newest_first = builtins.list(self.list_all(parent_id=run_id, limit=200))
        return newest_first[::-1]

    def get(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/runs/{_quote(run_id)}")

    def list(self, **filters: Any) -> dict[str, Any]:
        """GET /v1/runs with status, queue, task, parent_id, limit, cursor: {"items",
        "next_cursor"}."""
        return self._call("GET", "/v1/runs", params=filters)

    def list_all(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every run matching the filters, newest first, following next_cursor page by page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list(**filters, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/cancel")

    def retry(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/retry")

    def events(
        self, run_id: str, after: int = 0, limit: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        params = {"after": after, "limit": limit}
        items: builtins.list[dict[str, Any]] = self._call(
            "GET", f"/v1/runs/{_quote(run_id)}/events", params=params
        )["items"]
        return items

    # --- queues, tasks, workers, schedules -----------------------------------------------------

    def queues(self) -> dict[str, Any]:
        return self._call("GET", "/v1/queues")

    def pause(self, queue: str) -> dict[str, Any]:
        """Holds this tenant's runs in `queue` (running attempts finish) until resume."""
        return self._call("POST", f"/v1/queues/{_quote(queue)}/pause")

    def resume(self, queue: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/queues/{_quote(queue)}/resume")

    def set_limits(self, queue: str, **changes: Any) -> dict[str, Any]:
        """PUT /v1/queues/{queue}/limits with concurrency, rate, key_concurrency, key_rate: the
        ones given change (None removes that limit), the others stay. Answers the queue."""
        return self._call("PUT", f"/v1/queues/{_quote(queue)}/limits", changes)

    def tasks(self) -> dict[str, Any]:
        return self._call("GET", "/v1/tasks")

    def scoped_token(
        self, *, runs: builtins.list[str] | None = None, queue: str | None = None, ttl_s: int = 3600
    ) -> dict[str, Any]:
        """POST /v1/tokens: a read-only token for a browser, for `runs` or every run of `queue`,
        good for `ttl_s` seconds: {"token", "expires_at"}."""
        scope: dict[str, Any] = {"runs": runs} if runs is not None else {"queue": queue}
        return self._call("POST", "/v1/tokens", {**scope, "ttl_s": ttl_s})

    def workers(self) -> dict[str, Any]:
        return self._call("GET", "/v1/workers")

    def schedules(self) -> dict[str, Any]:
        return self._call("GET", "/v1/schedules")

    def create_schedule(self, name: str, task: str, input: Any = None, **fields: Any) -> Reply:
        """POST /v1/schedules with `cron` or `every_s` (and `queue`): 201 new, 200 replaced."""
        body = {"name": name, "task": task, "input": input, **fields}
        return self.request("POST", "/v1/schedules", body)

    def delete_schedule(self, name: str) -> None:
        self._call("DELETE", f"/v1/schedules/{_quote(name)}")

    # --- webhooks ------------------------------------------------------------------------------

    def create_webhook(
        self, url: str, events: Sequence[str] = ("*",), queue: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/webhooks: the endpoint, with its signing secret (shown this once)."""
        body: dict[str, Any] = {"url": url, "events": list(events)}
        if queue is not None:
            body["queue"] = queue
        return self._call("POST", "/v1/webhooks", body)

    def webhooks(self) -> dict[str, Any]:
        return self._call("GET", "/v1/webhooks")

    def delete_webhook(self, webhook_id: str) -> None:
        self._call("DELETE", f"/v1/webhooks/{_quote(webhook_id)}")

    def webhook_deliveries(self, webhook_id: str, limit: int | None = None) -> dict[str, Any]:
        """The endpoint's delivery attempts, newest first."""
        path = f"/v1/webhooks/{_quote(webhook_id)}/deliveries"
        return self._call("GET", path, params={"limit": limit})

    def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Queue a webhook.ping delivery to the endpoint."""
        return self._call("POST", f"/v1/webhooks/{_quote(webhook_id)}/test")

    # --- the live tail -------------------------------------------------------------------------

    def tail(
        self, run_id: str, after: int = 0, *, give_up_after: float = 60
    ) -> Iterator[dict[str, Any]]:
        """The run's events with seq > after, as they happen, ending after the terminal event.
        A dropped connection is resumed with after=<last seq>, so nothing repeats or goes
        missing; it gives up (Unreachable) after `give_up_after` s without a connection."""
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
                    raise ApiError(status, problem_of(exc.response.body)) from None
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
                pass
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > give_up_after:
                raise Unreachable(self.base_url, f"no connection for {give_up_after:.0f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _tail_url(self, run_id: str, after: int) -> str:
        scheme, rest = self.base_url.split("://", 1)
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest}/v1/runs/{_quote(run_id)}/tail?after={after}"

    # --- plumbing ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One API call. Raises ApiError for an error status, Unreachable without an answer."""
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
                raw = response.read()
                status, answer = response.status, dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the connection open until closed
                raise ApiError(exc.code, problem_of(exc.read())) from None
        except urllib.error.URLError as exc:
            raise Unreachable(self.base_url, reason_of(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, not HTTP at all
            raise Unreachable(self.base_url, reason_of(exc)) from None
        lowered = {name.lower(): value for name, value in answer.items()}
        return Reply(status, _json(raw, status, self.base_url), lowered)

    def _call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        """The JSON object the API answers (every runlane endpoint answers an object)."""
        answer = self.request(method, path, body, **kwargs).body
        if answer is None:  # 204 No Content
            return {}
        if not isinstance(answer, dict):
            problem = {
                "title": "not a JSON object",
                "detail": f"{self.base_url} answered {answer!r:.80}",
            }
            raise ApiError(200, problem)
        return answer

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def server_url(given: str | None, env: Mapping[str, str]) -> str:
    """--url, else RUNLANE_URL, else http://127.0.0.1:$PORT (8000): where the stack listens."""
    settings = ClientSettings.from_env(env)
    url = given or settings.url or f"http://127.0.0.1:{settings.port}"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the server URL must start with http:// or https://, not {url!r}")
    return url


def find_token(given: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The token and where it came from: --token, RUNLANE_TOKEN, else the dev token file."""
    if given:
        return given, "--token"
    settings = ClientSettings.from_env(env)
    if settings.token:
        return settings.token, "RUNLANE_TOKEN"
    # Read, never create: a token made up here would not match the server's.
    path = settings.home / "dev-token"
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token:
        raise ConfigError(
            f"no API token: pass --token or set RUNLANE_TOKEN (no dev token at {path})"
        )
    return token, str(path)


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _json(raw: bytes, status: int, url: str) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        # e.g. --url names some other web server
        problem = {"title": "not JSON", "detail": f"{url} did not answer JSON: is it runlane?"}
        raise ApiError(status, problem) from None
