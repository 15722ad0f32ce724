"""Fixtures of the API integration tests: the real app on this test's database and key prefix,
and a test client that holds every response to /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from app.config import Settings
from app.services import Services
from app.web import create_app
from tests.integration.documented import DocumentedClient


@pytest.fixture
def services(settings: Settings, redis: Redis) -> Iterator[Services]:
    svc = Services.build(settings, pool_size=4)
    yield svc
    svc.close()


@pytest.fixture
def app(services: Services) -> Flask:
    return create_app(services=services)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """app.test_client(), but a response that /openapi.json does not document fails the test."""
    return DocumentedClient(app, app.response_class, use_cookies=True)
