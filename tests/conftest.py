"""Fixtures: real Redis and Postgres (the machine's when REDIS_URL/DATABASE_URL are set, else
embedded ones), a database of its own and a Redis key prefix of its own for every test."""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from redis import Redis

from app import db
from app.config import Settings
from runlane.embedded import EmbeddedServers, free_port
from tests.helpers import Stack

TOKENS = {"tok-alpha": "alpha", "tok-beta": "beta"}


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    redis_url, database_url = os.environ.get("REDIS_URL"), os.environ.get("DATABASE_URL")
    # Not under pytest's temp folder: any new pytest session resets that to mode 0700, which locks
    # out the embedded Postgres (it runs as another user when we are root).
    folder = Path(tempfile.mkdtemp(prefix="runlane-servers-"))
    embedded = EmbeddedServers(folder)
    embedded.start(redis=not redis_url, postgres=not database_url)
    try:
        yield redis_url or embedded.redis_url, database_url or embedded.database_url
    finally:
        DROPS.close()  # before the servers go: every scratch database dropped
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def template_db(servers: tuple[str, str]) -> Iterator[str]:
    """A database with every migration applied, cloned for each test."""
    _, admin_url = servers
    name = f"rl_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db.migrate(with_dbname(admin_url, name))
    yield name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A database of its own (a clone of `template`, else empty), dropped afterwards."""
    name = f"rl_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clone}')
    try:
        yield with_dbname(admin_url, name)
    finally:
        DROPS.drop(admin_url, name)


class Dropper:
    """Drops scratch databases in a thread of its own: a DROP DATABASE waits for a checkpoint
    (some 1.5 s under load), which would otherwise be every test's teardown."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def drop(self, admin_url: str, name: str) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="db-dropper", daemon=True)
                self.thread.start()
        self.queue.put((admin_url, name))

    def close(self) -> None:
        with self.lock:
            thread, self.thread = self.thread, None
        if thread is not None:
            self.queue.put(None)
            thread.join(300)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            admin_url, name = item
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DROPS = Dropper()


@pytest.fixture
def database_url(servers: tuple[str, str], template_db: str) -> Iterator[str]:
    with scratch_database(servers[1], template_db) as url:
        yield url


@pytest.fixture
def empty_database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    with scratch_database(servers[1]) as url:
        yield url


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_url(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture
def redis(redis_url: str, prefix: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    keys += list(client.scan_iter(match=f"rq:*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, database_url: str, prefix: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        redis_url=redis_url,
        database_url=database_url,
        api_tokens={token: tenant for token, tenant in TOKENS.items()},
        dev_mode=False,
        prefix=prefix,
        lease_seconds=3.0,
        heartbeat_seconds=0.5,
        cancel_grace_seconds=2.0,
    )


def stack_env(settings: Settings) -> dict[str, str]:
    return {
        "PORT": str(free_port()),
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.database_url or "",
        "RUNLANE_PREFIX": settings.prefix,
        "RUNLANE_HOME": str(settings.home),
        "RUNLANE_API_TOKENS": ",".join(f"{t}:{k}" for k, t in settings.api_tokens.items()),
        "RUNLANE_LEASE_SECONDS": str(settings.lease_seconds),
        "RUNLANE_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "RUNLANE_CANCEL_GRACE_SECONDS": str(settings.cancel_grace_seconds),
    }


@pytest.fixture
def stack_factory(
    settings: Settings, redis: Redis, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    """Builds a Stack of Procfile processes on this test's database and prefix; stops it after."""
    stacks: list[Stack] = []

    def make(**env: str) -> Stack:
        logdir = tmp_path / f"logs{len(stacks)}"
        logdir.mkdir()
        stack = Stack({**stack_env(settings), **env}, logdir)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """The whole stack running: release, web, one worker, relay, scheduler."""
    return stack_factory().start_all()


def auth(token: str = "tok-alpha") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def conninfo_dbname(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname", ""))
