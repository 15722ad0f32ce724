"""Settings: one object read from the environment once, by each entry point."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TASK_MODULES = ("app.demo",)
DEV_TENANT = "dev"
TRACES_EXPORTERS = ("otlp", "console", "none")


class ConfigError(ValueError):
    """The environment holds a value runlane cannot use."""


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    bind_host: str = "127.0.0.1"
    home: Path = Path(".runlane")
    redis_url: str | None = None
    database_url: str | None = None
    # token -> tenant; a dict so that lookups never depend on the order tokens were given in
    api_tokens: Mapping[str, str] = field(default_factory=dict)
    dev_mode: bool = True
    task_modules: tuple[str, ...] = DEFAULT_TASK_MODULES
    queues: tuple[str, ...] = ("default",)
    idempotency_ttl_seconds: int = 86400
    run_retention_days: int = 7
    # How long a running attempt stays leased without a heartbeat before it counts as stalled.
    lease_seconds: float = 10.0
    heartbeat_seconds: float = 2.0
    # How long a running attempt may ignore a cancel request before it is stopped hard.
    cancel_grace_seconds: float = 5.0
    # Attempts one worker process runs at once; above 1 they run in threads (I/O-bound tasks).
    worker_concurrency: int = 1
    # Redis key prefix: lets several stacks (or tests) share one Redis database.
    prefix: str = "runlane"
    # The web process (gunicorn): worker processes, threads each (a tail holds one), access log.
    web_concurrency: int = 2
    web_threads: int = 64
    access_log: bool = False
    # The key scoped tokens are signed with (app.web.scoped); None: derived from the API tokens.
    token_secret: str | None = field(default=None, repr=False)
    # Origins whose pages may call the API from a browser (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    # Prometheus: one folder that every process of a machine writes its values to, which the
    # web's /metrics adds up (runlane dev sets it for its children); and the port a process
    # other than the web serves its own /metrics on (the first free one from it upward).
    metrics_dir: Path | None = None
    metrics_port: int | None = None
    # OpenTelemetry tracing (app.observability.tracing): off unless one of these is set. The
    # SDK reads its other OTEL_* variables (headers, sampler, batch delays) itself.
    otel_endpoint: str | None = None
    otel_traces_exporter: str | None = None

    @property
    def tracing(self) -> bool:
        """Whether this stack's processes export traces: an endpoint or an exporter named, and
        not OTEL_TRACES_EXPORTER=none."""
        if self.otel_traces_exporter is not None:
            return self.otel_traces_exporter != "none"
        return self.otel_endpoint is not None

    # Webhooks: private addresses allowed (tests, a local receiver), the retry delays' scale
    # (tests shorten them), the time an attempt may take.
    webhooks_allow_private: bool = False
    webhooks_retry_scale: float = 1.0
    webhooks_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("RUNLANE_HOME") or ".runlane").absolute()
        tokens_raw = env.get("RUNLANE_API_TOKENS", "").strip()
        dev_mode = not tokens_raw
        tokens = parse_tokens(tokens_raw) if tokens_raw else {dev_token(home): DEV_TENANT}
        return cls(
            port=_int(env, "PORT", 8000, low=1, high=65535),
            bind_host=env.get("RUNLANE_BIND_HOST") or "127.0.0.1",
            home=home,
            redis_url=env.get("REDIS_URL") or None,
            database_url=env.get("DATABASE_URL") or None,
            api_tokens=tokens,
            dev_mode=dev_mode,
            task_modules=_csv(env.get("RUNLANE_TASK_MODULES")) or DEFAULT_TASK_MODULES,
            queues=_csv(env.get("RUNLANE_QUEUES")) or ("default",),
            idempotency_ttl_seconds=_int(env, "IDEMPOTENCY_TTL_SECONDS", 86400, low=1),
            run_retention_days=_int(env, "RUN_RETENTION_DAYS", 7, low=1),
            lease_seconds=_seconds(env, "RUNLANE_LEASE_SECONDS", 10.0),
            heartbeat_seconds=_seconds(env, "RUNLANE_HEARTBEAT_SECONDS", 2.0),
            cancel_grace_seconds=_seconds(env, "RUNLANE_CANCEL_GRACE_SECONDS", 5.0),
            worker_concurrency=_int(env, "RUNLANE_WORKER_CONCURRENCY", 1, low=1, high=1000),
            prefix=env.get("RUNLANE_PREFIX") or "runlane",
            web_concurrency=_int(env, "WEB_CONCURRENCY", 2, low=1, high=64),
            web_threads=_int(env, "RUNLANE_WEB_THREADS", 64, low=1, high=10_000),
            access_log=bool(env.get("RUNLANE_ACCESS_LOG")),
            token_secret=env.get("RUNLANE_TOKEN_SECRET") or None,
            cors_origins=_origins(env.get("RUNLANE_CORS_ORIGINS")),
            metrics_dir=_path(env.get("PROMETHEUS_MULTIPROC_DIR")),
            metrics_port=_int(env, "RUNLANE_METRICS_PORT", 0, low=1, high=65535) or None,
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            otel_traces_exporter=_exporter(env.get("OTEL_TRACES_EXPORTER")),
            webhooks_allow_private=env.get("RUNLANE_WEBHOOKS_ALLOW_PRIVATE") == "1",
            webhooks_retry_scale=_seconds(env, "RUNLANE_WEBHOOKS_RETRY_SCALE", 1.0),
            webhooks_timeout_seconds=_seconds(env, "RUNLANE_WEBHOOKS_TIMEOUT_SECONDS", 10.0),
        )

    def require_urls(self) -> tuple[str, str]:
        """The server URLs; processes other than `runlane dev` cannot start servers themselves."""
        if not self.redis_url or not self.database_url:
            raise ConfigError(
                "REDIS_URL and DATABASE_URL must be set (scripts/run sets them for its children)"
            )
        return self.redis_url, self.database_url


@dataclass(frozen=True)
class ClientSettings:
    """What the CLI and the Python client read from the environment. Not Settings: that one
    makes the dev token when there is none, and a client must only ever read it."""

    url: str | None = None
    token: str | None = None
    port: int = 8000
    home: Path = Path(".runlane")
    colour: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if env is None else env
        raw_port = env.get("PORT") or "8000"
        if not raw_port.isdigit():
            raise ConfigError(f"PORT must be a port number, not {raw_port!r}")
        return cls(
            url=env.get("RUNLANE_URL") or None,
            token=env.get("RUNLANE_TOKEN") or None,
            port=int(raw_port),
            home=Path(env.get("RUNLANE_HOME") or ".runlane").absolute(),
            # no-color.org, and terminals that cannot show it
            colour=not env.get("NO_COLOR") and env.get("TERM") != "dumb",
        )


def parse_tokens(raw: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for pair in _csv(raw):
        tenant, sep, token = pair.partition(":")
        if not sep or not tenant.strip() or not token.strip():
            raise ConfigError(f"RUNLANE_API_TOKENS entries are tenant:token, got {pair[:40]!r}")
        tokens[token.strip()] = tenant.strip()
    return tokens


def dev_token(home: Path) -> str:
    """The dev-mode token, made once per RUNLANE_HOME so every process of the stack agrees on it."""
    path = home / "dev-token"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    token = "dev_" + secrets.token_urlsafe(24)
    tmp = path.with_suffix(f".{os.getpid()}")
    tmp.write_text(token)
    try:
        os.link(tmp, path)  # atomic create-if-absent: concurrent starters agree on one token
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def _origins(raw: str | None) -> tuple[str, ...]:
    """RUNLANE_CORS_ORIGINS: scheme://host[:port] each, as a browser sends Origin; or `*`."""
    origins = tuple(origin.rstrip("/") for origin in _csv(raw))
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        malformed = scheme not in ("http", "https") or not sep or not rest or "/" in rest
        if origin != "*" and malformed:
            raise ConfigError(
                f"RUNLANE_CORS_ORIGINS entries are origins like https://app.example.com, "
                f"got {origin[:80]!r}"
            )
    return origins


def _path(raw: str | None) -> Path | None:
    return Path(raw).absolute() if raw else None


def _exporter(raw: str | None) -> str | None:
    """OTEL_TRACES_EXPORTER: `otlp` (OTLP over HTTP), `console` or `none`."""
    value = (raw or "").strip().lower()
    if not value:
        return None
    if value not in TRACES_EXPORTERS:
        allowed = ", ".join(TRACES_EXPORTERS)
        raise ConfigError(f"OTEL_TRACES_EXPORTER must be one of {allowed}, got {raw!r}")
    return value


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _int(
    env: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int | None = None
) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be between {low} and {high or 'any'}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0:
        raise ConfigError(f"{name} must be more than 0, got {raw!r}")
    return value
