"""The connections an entry point needs, built explicitly from Settings (never at import time)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from psycopg_pool import ConnectionPool
from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app import db, dispatch, tasks
from app.config import Settings
from app.redis_keys import Keys

# Redis unreachable (restarting, failing over), as opposed to a command it refused.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


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
    )
