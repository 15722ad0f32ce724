"""Tokens never reach a log line: the access log's URLs lose their `token` values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.logs import REDACTED, redact_url

SECRET = "tok-s3cret"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"/v1/runs/x/tail?token={SECRET}", f"/v1/runs/x/tail?token={REDACTED}"),
        (
            f"/v1/tail?queue=a&token={SECRET}&cursor=3",
            f"/v1/tail?queue=a&token={REDACTED}&cursor=3",
        ),
        (f"token={SECRET}", f"token={REDACTED}"),  # a bare query string
        (f"/x?%74oken={SECRET}", f"/x?%74oken={REDACTED}"),  # decoded as the server decodes it
        (f"https://h/ui?token={SECRET}#top", f"https://h/ui?token={REDACTED}#top"),
        ("/v1/runs?tokens=1&mytoken=2", "/v1/runs?tokens=1&mytoken=2"),
        ("/v1/runs", "/v1/runs"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_the_access_log_shows_no_token_whatever_its_format() -> None:
    from app.web import gunicorn_conf

    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/v1/runs/x/events?token={SECRET}",
        "QUERY_STRING": f"token={SECRET}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_REFERER": f"http://h/ui?token={SECRET}",
        "HTTP_AUTHORIZATION": f"Bearer {SECRET}",
        "PATH_INFO": "/v1/runs/x/events",
    }
    request = SimpleNamespace(headers=[("AUTHORIZATION", f"Bearer {SECRET}")])
    response = SimpleNamespace(status="200 OK", sent=10, headers=[])
    duration = SimpleNamespace(seconds=0, microseconds=5)
    logger = gunicorn_conf.RedactingLogger.__new__(gunicorn_conf.RedactingLogger)
    atoms = logger.atoms(response, request, environ, duration)
    assert SECRET not in repr(atoms)
    assert atoms["r"] == f"GET /v1/runs/x/events?token={REDACTED} HTTP/1.1"
