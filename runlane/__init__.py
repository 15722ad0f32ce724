"""runlane's public Python API: the task decorator, the exception that fails a run at once, and
the HTTP client. The `runlane` command lives in runlane.cli."""

from __future__ import annotations

from app.tasks import Unrecoverable, task
from runlane.client import Client

__all__ = ["Client", "Unrecoverable", "task"]
