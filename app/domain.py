"""Domain records: run statuses, event types, and the Run and Event records clients see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    QUEUED = "queued"
    DELAYED = "delayed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class EventType(StrEnum):
    QUEUED = "run.queued"
    DELAYED = "run.delayed"
    STARTED = "run.started"
    PROGRESS = "run.progress"
    LOG = "run.log"
    RETRYING = "run.retrying"
    STALLED = "run.stalled"
    SUCCEEDED = "run.succeeded"
    FAILED = "run.failed"
    CANCELLED = "run.cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Run:
    id: str
    tenant: str
    task: str
    queue: str
    status: RunStatus
    input: Any
    result: Any
    error: dict[str, Any] | None
    attempt: int
    max_attempts: int
    priority: int
    progress: dict[str, Any] | None
    metadata: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_seq: int
    backoff: dict[str, Any] | None = None
    timeout_s: float | None = None
    request_fingerprint: str | None = None
    attempt_base: int = 0  # attempts before the current budget (a manual retry starts one)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Run:
        return cls(
            id=str(row["id"]),
            tenant=row["tenant"],
            task=row["task"],
            queue=row["queue"],
            status=RunStatus(row["status"]),
            input=row["input"],
            result=row["result"],
            error=row["error"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            priority=row["priority"],
            progress=row["progress"],
            metadata=row["metadata"],
            idempotency_key=row["idempotency_key"],
            created_at=row["created_at"],
            scheduled_for=row["scheduled_for"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            last_seq=row["last_seq"],
            backoff=row.get("backoff"),
            timeout_s=row.get("timeout_s"),
            request_fingerprint=row.get("request_fingerprint"),
            attempt_base=row.get("attempt_base", 0),
        )

    @property
    def budget_attempt(self) -> int:
        """Which attempt of the current budget this is (1 = the first)."""
        return self.attempt - self.attempt_base

    def to_json(self) -> dict[str, Any]:
        """The run as the contract shows it to clients."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "status": self.status.value,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "progress": self.progress,
            "metadata": self.metadata,
            "idempotency_key": self.idempotency_key,
            "created_at": rfc3339(self.created_at),
            "scheduled_for": rfc3339(self.scheduled_for),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "last_seq": self.last_seq,
        }


@dataclass(frozen=True)
class Event:
    run_id: str
    seq: int
    type: EventType
    at: datetime
    data: dict[str, Any]
    tenant: str = ""
    queue: str = ""
    tseq: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Event:
        return cls(
            run_id=str(row["run_id"]),
            seq=row["seq"],
            type=EventType(row["type"]),
            at=row["at"],
            data=row["data"],
            tenant=row.get("tenant", ""),
            queue=row.get("queue", ""),
            tseq=row.get("tseq"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type.value,
            "at": rfc3339(self.at),
            "data": self.data,
        }
