"""ctx.log takes the contract's levels only (debug, info, warning, error; info by default)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workers.context import Attempt, AttemptContext
from workers.stopping import ThreadDelivery


def context() -> tuple[AttemptContext, list[dict[str, Any]]]:
    """A worker's task context whose progress and log lines are collected, not written."""
    lines: list[dict[str, Any]] = []

    def report(run: Any, kind: str, data: dict[str, Any]) -> bool:
        lines.append({"kind": kind, **data})
        return False

    return AttemptContext(
        Attempt(SimpleNamespace(id="r1", attempt=1), ThreadDelivery()), report
    ), lines


@pytest.mark.parametrize("level", ["shouting", "INFO", "warn", "", None, 3])
def test_only_the_contract_levels_are_logged(level):
    ctx, lines = context()
    for good in ("debug", "info", "warning", "error"):
        ctx.log(good, good)
    ctx.log("default")
    with pytest.raises(ValueError, match="debug, info, warning, error") as refused:
        ctx.log("hello", level)
    assert repr(level) in str(refused.value)
    assert lines == [
        {"kind": "log", "message": good, "level": good}
        for good in ("debug", "info", "warning", "error")
    ] + [{"kind": "log", "message": "default", "level": "info"}]
