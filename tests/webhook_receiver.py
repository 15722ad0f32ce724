"""A webhook receiver for tests: a real HTTP server on loopback that verifies each delivery's
Standard Webhooks signature and records it; it may refuse the first tries of chosen events.
Also an endpoint that accepts connections and never answers (a dead one)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    at: float  # time.time() when it came


@dataclass
class Receiver:
    url: str
    secret: str = ""  # set once the endpoint is made
    # (event) -> how many tries get a 500 before one gets a 200
    refuse: Callable[[dict[str, Any]], int] = lambda event: 0
    accepted: list[Received] = field(default_factory=list)
    tries: Counter[str] = field(default_factory=Counter)  # per webhook-id, answered or not
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], raw: bytes) -> int:
        try:
            body = Webhook(self.secret).verify(raw, headers)
        except Exception:  # any failure to verify is what the test counts
            with self.lock:
                self.bad_signatures += 1
            return 400
        webhook_id = headers["webhook-id"]
        with self.lock:
            self.tries[webhook_id] += 1
            if self.tries[webhook_id] <= self.refuse(body):
                return 500
            self.accepted.append(Received(webhook_id, body, time.time()))
        return 200

    def unique(self) -> dict[str, Received]:
        with self.lock:
            return {r.webhook_id: r for r in self.accepted}


@contextmanager
def receiver(**kwargs: Any) -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if len(raw) < length:  # the sender died mid-request (SIGKILL): nothing to verify
                self.close_connection = True
                return
            status = box[0].handle({k.lower(): v for k, v in self.headers.items()}, raw)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", **kwargs))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dead_endpoint() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1000)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/dead"
    finally:
        sock.close()


def events_of(received: dict[str, Received]) -> set[tuple[str, int]]:
    return {(r.body["run_id"], r.body["seq"]) for r in received.values() if "run_id" in r.body}
