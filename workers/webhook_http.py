"""Sending one webhook attempt: the event JSON POSTed, signed per Standard Webhooks, over a
connection to the very address that was checked (so DNS rebinding cannot point it elsewhere),
with the URL's host kept for the Host header and TLS. No redirect is followed."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import httpcore
from standardwebhooks.webhooks import Webhook

from app.webhook_urls import UrlRefused, checked_address

USER_AGENT = b"runlane-webhooks/1"
MAX_ERROR_CHARS = 300


class Outcome(NamedTuple):
    """What one attempt got: the answer's status (None without one) or why it failed."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class CheckedBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, but each connect resolves the host once, checks every
    address it resolves to, and connects to the checked one."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        address = checked_address(host, port, allow_private=self.allow_private)
        return self.sockets.connect_tcp(address, port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise UrlRefused("webhooks are not sent over unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Sender:
    """Signs and sends attempts from many threads at once, keeping connections alive between
    attempts to the same origin."""

    def __init__(self, *, timeout_s: float, allow_private: bool, max_connections: int) -> None:
        self.timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s,
                        "pool": timeout_s}  # fmt: skip
        self.pool = httpcore.ConnectionPool(
            max_connections=max_connections,
            keepalive_expiry=30,
            network_backend=CheckedBackend(allow_private=allow_private),
        )

    def send(self, url: str, secret: str, message_id: str, body: str) -> Outcome:
        started = time.monotonic()
        try:
            response = self.pool.request(
                "POST",
                url,
                headers=signed_headers(secret, message_id, body),
                content=body.encode(),
                extensions={"timeout": self.timeout},
            )
        except UrlRefused as exc:
            return _failed(started, str(exc))
        except httpcore.TimeoutException:
            return _failed(started, "timed out")
        except (httpcore.ConnectError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            return _failed(started, f"{type(exc).__name__}: {exc}")
        except httpcore.UnsupportedProtocol as exc:
            return _failed(started, str(exc))
        code = response.status
        error = None if 200 <= code < 300 else f"answered {code}"
        return Outcome(code, error, _ms_since(started))

    def close(self) -> None:
        self.pool.close()


def signed_headers(secret: str, message_id: str, body: str) -> list[tuple[bytes, bytes]]:
    """The Standard Webhooks headers: webhook-id, webhook-timestamp (now, in seconds) and
    webhook-signature (v1, HMAC-SHA256 of id.timestamp.body with the secret's key)."""
    now = datetime.now(UTC).replace(microsecond=0)
    signature = Webhook(secret).sign(message_id, now, body)
    return [
        (b"Content-Type", b"application/json"),
        (b"User-Agent", USER_AGENT),
        (b"webhook-id", message_id.encode()),
        (b"webhook-timestamp", str(int(now.timestamp())).encode()),
        (b"webhook-signature", signature.encode()),
    ]


def _failed(started: float, error: str) -> Outcome:
    return Outcome(None, error[:MAX_ERROR_CHARS] or "failed", _ms_since(started))


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
