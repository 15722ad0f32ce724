"""The Procfile's own commands: `release` (migrate), `relay` and `scheduler`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from app.config import ConfigError, Settings

if TYPE_CHECKING:
    from runlane.cli import AddCommand


def cmd_migrate(args: argparse.Namespace) -> int:
    from app import db

    settings = Settings.from_env()
    if not settings.database_url:
        raise ConfigError("DATABASE_URL must be set (scripts/run sets it for its children)")
    applied = db.migrate(settings.database_url)
    if applied:
        print("applied migrations: " + ", ".join(f"{v:04d}" for v in applied))
    else:
        print("schema is up to date")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from app import logs
    from workers import relay

    logs.configure()
    relay.main(Settings.from_env())
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from app import logs
    from workers import scheduler

    logs.configure()
    scheduler.main(Settings.from_env())
    return 0


def register(command: AddCommand) -> None:
    command("migrate", cmd_migrate, "apply pending database migrations (Procfile release)")
    command("relay", cmd_relay, "publish the event outbox to Redis (Procfile relay)")
    command("scheduler", cmd_scheduler, "fire schedules and due delayed runs (Procfile scheduler)")
