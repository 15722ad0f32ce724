"""The errors the client raises: the API's refusals (with their problem+json) and a server that
does not answer."""

from __future__ import annotations

import builtins
import json
import re
from typing import Any

_BATCH_ITEM = re.compile(r"\bruns\[(\d+)\]")  # a field of a batch's item: runs[3].priority


class ApiError(Exception):
    """The API answered with an error: `problem` is its application/problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title") or "error"
        detail = problem.get("detail")
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))

    @property
    def fields(self) -> builtins.list[tuple[str, str]]:
        """The offending fields of a 4xx (422 names them): `("task", "unknown task 'x'")`."""
        errors = self.problem.get("errors")
        if not isinstance(errors, builtins.list):
            return []
        return [
            (str(e.get("field", "")), str(e.get("message", "")))
            for e in errors
            if isinstance(e, dict)
        ]


class BatchRefused(ApiError):
    """submit_many's request for the runs from `offset` on was refused. Each request is all or
    nothing, so none of those exist; `made` holds the runs the requests before it made. The
    fields count in the whole list given (`runs[1003].priority`), not in the one request."""

    def __init__(self, refused: ApiError, offset: int, made: builtins.list[dict[str, Any]]) -> None:
        problem = dict(refused.problem)
        if isinstance(problem.get("detail"), str):
            problem["detail"] = _shifted(problem["detail"], offset)
        if isinstance(problem.get("errors"), builtins.list):
            problem["errors"] = [
                {**e, "field": _shifted(e["field"], offset)}
                if isinstance(e, dict) and isinstance(e.get("field"), str)
                else e
                for e in problem["errors"]
            ]
        super().__init__(refused.status, problem)
        self.offset = offset
        self.made = made


class Unreachable(ConnectionError):
    """No HTTP answer from the server at `url` (refused, timed out, not an HTTP server)."""

    def __init__(self, url: str, reason: object) -> None:
        self.url = url
        super().__init__(f"cannot reach {url} ({reason})")


def _shifted(text: str, offset: int) -> str:
    """`runs[i]` of one batch request, counted from the start of the whole list."""
    return _BATCH_ITEM.sub(lambda m: f"runs[{int(m[1]) + offset}]", text)


def reason_of(reason: object) -> object:
    """`Connection refused` rather than `[Errno 111] Connection refused`."""
    return reason.strerror or reason if isinstance(reason, OSError) else reason


def problem_of(raw: bytes | bytearray | None) -> dict[str, Any]:
    try:
        found = json.loads(raw or b"{}")
    except ValueError:
        return {"detail": (raw or b"").decode(errors="replace")[:200]}
    return found if isinstance(found, dict) else {"detail": str(found)}
