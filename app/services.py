"""The connections an entry point needs, built explicitly from Settings (never at import time)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from psycopg_pool import ConnectionPool
from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app import db, dispatch, tasks
from app.config import Settings
from app.redis_keys import Keys

# Redis unreachable (restarting, failing over), as opposed to a command it refused. A READONLY
# refusal is one too: the server is a replica now (an old primary after a failover).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
# What a server that turned replica answers besides READONLY: a blocked pop it let go, and a
# script's write refused (redis-py raises both as plain ResponseErrors).
_NO_PRIMARY = ("UNBLOCKED", "READONLY", "You can't write against a read only replica")


def redis_outage(exc: BaseException) -> bool:
    """Whether `exc` means Redis is away or is no primary now (wait and try again), rather
    than a command it refused for good."""
    if isinstance(exc, REDIS_DOWN):
        return True
    return isinstance(exc, ResponseError) and any(sign in str(exc) for sign in _NO_PRIMARY)


def primary_lost(exc: BaseException) -> bool:
    """Whether the connections now lead to a replica: drop them, so the next connect finds the
    primary behind the address (a connection error has dropped its connection already)."""
    return redis_outage(exc) and not isinstance(exc, (RedisConnectionError, RedisTimeoutError))


@dataclass
class Services:
    settings: Settings
    pool: ConnectionPool
    redis: Redis
    keys: Keys
    registry: tasks.Registry = field(default_factory=lambda: tasks.registry)

    @classmethod
    def build(cls, settings: Settings, *, pool_size: int = 10, name: str = "runlane") -> Services:
        redis_url, database_url = settings.require_urls()
        registry = tasks.load(settings.task_modules)
        return cls(
            settings=settings,
            pool=db.make_pool(database_url, max_size=pool_size, name=name),
            redis=connect_redis(redis_url),
            keys=Keys(settings.prefix),
            registry=registry,
        )

    def nudge_relay(self, pipeline: Pipeline | None = None) -> None:
        """After a commit that wrote events: wake the relay now. Best effort, so never in the way
        of the commit's caller: a lost nudge costs at most the relay's fallback poll."""
        with contextlib.suppress(*REDIS_DOWN):
            dispatch.nudge_relay(pipeline if pipeline is not None else self.redis, self.keys)

    def close(self) -> None:
        self.pool.close()
        self.redis.close()


def connect_redis(url: str) -> Redis:
    """A client that fails fast: callers fall back to Postgres rather than wait out long retries."""
    return Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 1),
        # a READONLY answer closes the connection (then one retry on a new one), so the next
        # connect finds the current primary behind the address instead of the old one
        retry_on_error=[ReadOnlyError],
    )
