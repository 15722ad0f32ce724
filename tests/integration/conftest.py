"""Fixtures of the API integration tests: the real app on this test's database and key prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from app.config import Settings
from app.services import Services
from app.web import create_app


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
    return app.test_client()
