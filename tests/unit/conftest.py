"""Fixtures the unit tests share."""

from __future__ import annotations

from typing import Any

import pytest

from runlane.embedded import free_port


@pytest.fixture
def nowhere(monkeypatch: Any) -> str:
    """A server URL nothing answers on, and a token, in the environment: the CLI's checks that
    come before any request are seen, and a request fails as unreachable."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("RUNLANE_URL", url)
    monkeypatch.setenv("RUNLANE_TOKEN", "tok")
    return url
