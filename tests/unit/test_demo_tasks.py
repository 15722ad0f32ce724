"""The demo tasks of contract §3, called with a stand-in context."""

from __future__ import annotations

import threading
import time

import pytest

from app import demo
from app.tasks import Unrecoverable, registry


class FakeContext:
    def __init__(self, attempt: int = 1) -> None:
        self.run_id = "r1"
        self.attempt = attempt
        self.events: list[tuple] = []
        self.cancel = threading.Event()

    def progress(self, percent, message=""):
        self.events.append(("progress", percent, message))

    def log(self, message, level="info"):
        self.events.append(("log", message, level))

    @property
    def cancel_requested(self):
        return self.cancel.is_set()

    def wait(self, seconds):
        return self.cancel.wait(seconds)


def test_all_five_are_registered():
    assert {"demo.echo", "demo.noop", "demo.sleep", "demo.progress", "demo.fail"} <= set(
        registry.tasks
    )


def test_echo_and_noop():
    assert demo.echo(FakeContext(), {"a": [1]}) == {"a": [1]}
    assert demo.noop(FakeContext(), {"a": 1}) is None


def test_sleep_sleeps_and_notices_cancel_within_100ms():
    ctx = FakeContext()
    began = time.monotonic()
    assert demo.sleep(ctx, {"seconds": 0.05}) == {"slept": 0.05}
    assert time.monotonic() - began >= 0.05
    threading.Timer(0.1, ctx.cancel.set).start()
    began = time.monotonic()
    demo.sleep(ctx, {"seconds": 10})
    assert time.monotonic() - began < 0.2


def test_progress_steps():
    ctx = FakeContext()
    assert demo.progress(ctx, {"steps": 3, "interval_ms": 1}) == {"steps": 3}
    assert ctx.events == [
        ("progress", 33, "step 1/3"),
        ("progress", 67, "step 2/3"),
        ("progress", 100, "step 3/3"),
    ]


def test_fail_raises_on_the_first_k_attempts():
    with pytest.raises(demo.DemoFailure):
        demo.fail(FakeContext(attempt=2), {"times": 2})
    assert demo.fail(FakeContext(attempt=3), {"times": 2}) == {"attempt": 3}
    with pytest.raises(Unrecoverable):
        demo.fail(FakeContext(attempt=1), {"times": 1, "unrecoverable": True})
