"""Settings.from_env: defaults, token parsing, and bad values refused with ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import DEV_TENANT, ClientSettings, ConfigError, Settings, dev_token


def test_defaults_are_the_contract_table(tmp_path: Path) -> None:
    settings = Settings.from_env({"RUNLANE_HOME": str(tmp_path)})

    assert settings.port == 8000
    assert settings.home == tmp_path
    assert settings.redis_url is None and settings.database_url is None
    assert settings.task_modules == ("app.demo",)
    assert settings.queues == ("default",)
    assert settings.idempotency_ttl_seconds == 86400
    assert settings.run_retention_days == 7
    assert settings.prefix == "runlane"
    assert settings.worker_concurrency == 1


def test_home_defaults_to_dot_runlane_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = Settings.from_env({})

    assert settings.home == tmp_path / ".runlane"
    assert settings.home.is_absolute()


def test_dev_mode_makes_one_token_per_home_for_tenant_dev(tmp_path: Path) -> None:
    first = Settings.from_env({"RUNLANE_HOME": str(tmp_path)})
    second = Settings.from_env({"RUNLANE_HOME": str(tmp_path)})

    assert first.dev_mode
    assert list(first.api_tokens.values()) == [DEV_TENANT]
    assert first.api_tokens == second.api_tokens
    assert list(first.api_tokens) == [dev_token(tmp_path)]
    assert (tmp_path / "dev-token").read_text().strip() == dev_token(tmp_path)


def test_api_tokens_map_token_to_tenant(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"RUNLANE_HOME": str(tmp_path), "RUNLANE_API_TOKENS": " alpha:tok-a , beta:tok-b,"}
    )

    assert not settings.dev_mode
    assert dict(settings.api_tokens) == {"tok-a": "alpha", "tok-b": "beta"}
    assert not (tmp_path / "dev-token").exists()


def test_a_token_may_contain_colons(tmp_path: Path) -> None:
    settings = Settings.from_env({"RUNLANE_HOME": str(tmp_path), "RUNLANE_API_TOKENS": "t:a:b"})

    assert dict(settings.api_tokens) == {"a:b": "t"}


def test_values_are_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "RUNLANE_HOME": str(tmp_path),
            "PORT": "9123",
            "REDIS_URL": "redis://example:6379/3",
            "DATABASE_URL": "postgresql://example/db",
            "RUNLANE_TASK_MODULES": "app.demo, mytasks",
            "RUNLANE_QUEUES": "emails,default",
            "IDEMPOTENCY_TTL_SECONDS": "60",
            "RUN_RETENTION_DAYS": "30",
            "RUNLANE_WORKER_CONCURRENCY": "50",
        }
    )

    assert settings.port == 9123
    assert settings.require_urls() == ("redis://example:6379/3", "postgresql://example/db")
    assert settings.task_modules == ("app.demo", "mytasks")
    assert settings.queues == ("emails", "default")
    assert settings.idempotency_ttl_seconds == 60
    assert settings.run_retention_days == 30
    assert settings.worker_concurrency == 50


def test_empty_values_mean_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"RUNLANE_HOME": str(tmp_path), "PORT": "", "REDIS_URL": "", "RUNLANE_QUEUES": " , "}
    )

    assert settings.port == 8000
    assert settings.redis_url is None
    assert settings.queues == ("default",)


@pytest.mark.parametrize(
    "env",
    [
        {"PORT": "eighty"},
        {"PORT": "80.5"},
        {"IDEMPOTENCY_TTL_SECONDS": "1d"},
        {"RUN_RETENTION_DAYS": "seven"},
        {"RUNLANE_API_TOKENS": "no-colon-here"},
        {"RUNLANE_API_TOKENS": ":token-without-tenant"},
        {"RUNLANE_API_TOKENS": "tenant-without-token:"},
        {"RUNLANE_API_TOKENS": "a:ok,broken"},
    ],
)
def test_bad_values_raise_config_error(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"RUNLANE_HOME": str(tmp_path), **env})


def test_the_urls_are_required_outside_dev(tmp_path: Path) -> None:
    settings = Settings.from_env({"RUNLANE_HOME": str(tmp_path), "REDIS_URL": "redis://x"})

    with pytest.raises(ConfigError, match="DATABASE_URL"):
        settings.require_urls()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "0"),
        ("PORT", "70000"),
        ("IDEMPOTENCY_TTL_SECONDS", "-5"),
        ("RUN_RETENTION_DAYS", "0"),
        ("RUNLANE_LEASE_SECONDS", "soon"),
        ("RUNLANE_HEARTBEAT_SECONDS", "0"),
        ("RUNLANE_CANCEL_GRACE_SECONDS", "-1"),
        ("RUNLANE_WORKER_CONCURRENCY", "0"),
        ("RUNLANE_WORKER_CONCURRENCY", "1001"),
    ],
)
def test_out_of_range_values_are_config_errors(name: str, value: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"RUNLANE_HOME": str(tmp_path), name: value})


def test_web_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "RUNLANE_HOME": str(tmp_path),
        "WEB_CONCURRENCY": "3",
        "RUNLANE_WEB_THREADS": "16",
        "RUNLANE_ACCESS_LOG": "1",
        "RUNLANE_BIND_HOST": "0.0.0.0",
    }
    settings = Settings.from_env(env)
    assert (settings.web_concurrency, settings.web_threads) == (3, 16)
    assert settings.access_log and settings.bind_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        Settings.from_env({**env, "WEB_CONCURRENCY": "many"})


def test_client_settings_read_the_dev_token_folder_but_make_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    client = ClientSettings.from_env({"RUNLANE_HOME": str(home), "PORT": "9001", "NO_COLOR": "1"})
    assert (client.port, client.home, client.url, client.token) == (9001, home, None, None)
    assert not client.colour
    assert not home.exists(), "a client never makes a dev token (nor its folder)"
    with pytest.raises(ConfigError, match="PORT"):
        ClientSettings.from_env({"PORT": "eighty"})
