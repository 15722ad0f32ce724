"""Webhooks without servers: the address checker (literals, names, IPv6 forms), the retry
schedule, the signature a receiver verifies, and the settings."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app import webhooks
from app.config import ConfigError, Settings
from app.webhook_urls import UrlRefused, check, checked_address, forbidden
from workers.webhook_http import signed_headers
from workers.webhooks import JITTER, RETRY_DELAYS_S, retry_delay

FORBIDDEN = [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
    "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1", "::1", "::",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "fe80::1", "fc00::1", "ff02::1", "2002:7f00:1::1",
]  # fmt: skip
PUBLIC = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not(address: str) -> None:
    assert not forbidden(ipaddress.ip_address(address))


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_name_that_resolves_to_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"sneaky.example": ["127.0.0.1"], "ok.example": ["93.184.215.14"]})
    with pytest.raises(UrlRefused, match=r"non-public address \(127.0.0.1\)"):
        check("https://sneaky.example/hook", allow_private=False)
    check("https://ok.example/hook", allow_private=False)
    check("https://sneaky.example/hook", allow_private=True)


def test_one_private_answer_among_public_ones_refuses_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"mixed.example": ["93.184.215.14", "10.0.0.7"]})
    with pytest.raises(UrlRefused):
        checked_address("mixed.example", 443, allow_private=False)


def test_the_address_connected_to_is_the_one_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"ok.example": ["93.184.215.14"]})
    assert checked_address("ok.example", 443, allow_private=False) == "93.184.215.14"


def test_the_real_resolver_refuses_localhost() -> None:
    with pytest.raises(UrlRefused):
        check("http://localhost:8000/hook", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/", "file:///etc/passwd", "93.184.215.14/x", "http:///x",
        "https://user:pw@93.184.215.14/", "https://93.184.215.14:0x10/", "http://[::1/",
        "https://" + "a" * 2000 + ".example/",
    ],
)  # fmt: skip
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        check(url, allow_private=True)


@pytest.mark.parametrize("url", ["http://[::1]:8080/", "http://[::ffff:127.0.0.1]/"])
def test_ipv6_literals_are_checked(url: str) -> None:
    with pytest.raises(UrlRefused):
        check(url, allow_private=False)


def test_retries_cover_a_day_even_at_the_shortest_jitter() -> None:
    shortest = [retry_delay(n, rand=lambda: 1.0) for n in range(1, len(RETRY_DELAYS_S) + 1)]
    assert all(delay is not None for delay in shortest)
    assert sum(d for d in shortest if d) >= 24 * 3600
    assert shortest[0] == pytest.approx(5 * (1 - JITTER))
    assert retry_delay(len(RETRY_DELAYS_S) + 1) is None
    assert retry_delay(1, scale=0.01, rand=lambda: 0.0) == pytest.approx(0.05)
    growing = [retry_delay(n, rand=lambda: 0.0) or 0 for n in range(1, len(RETRY_DELAYS_S) + 1)]
    assert growing == sorted(growing)


def test_a_signature_verifies_with_the_secret_and_only_with_it() -> None:
    secret, body = webhooks.new_secret(), '{"run_id": "r", "seq": 1}'
    headers = {k.decode(): v.decode() for k, v in signed_headers(secret, "msg_1", body)}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"run_id": "r", "seq": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("1", "2"), headers)


def test_secrets_are_standard_webhooks_secrets() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) == 24


def test_webhook_settings() -> None:
    settings = Settings.from_env({
        "RUNLANE_API_TOKENS": "a:b", "RUNLANE_WEBHOOKS_ALLOW_PRIVATE": "1",
        "RUNLANE_WEBHOOKS_RETRY_SCALE": "0.01", "RUNLANE_METRICS_PORT": "9464",
    })  # fmt: skip
    assert settings.webhooks_allow_private and settings.webhooks_retry_scale == 0.01
    assert settings.metrics_port == 9464 and settings.webhooks_timeout_seconds == 10
    defaults = Settings.from_env({"RUNLANE_API_TOKENS": "a:b"})
    assert not defaults.webhooks_allow_private and defaults.metrics_port is None
    with pytest.raises(ConfigError):
        Settings.from_env({"RUNLANE_API_TOKENS": "a:b", "RUNLANE_METRICS_PORT": "x"})
