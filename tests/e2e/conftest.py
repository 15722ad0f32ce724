"""Fixtures several e2e modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_redis_restart import Restartable


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Restartable]:
    """A Redis server of this test's own, to empty whole or kill (others share the machine's)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = Restartable(folder)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(10)
