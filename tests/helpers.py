"""Test helpers: waiting on conditions with a deadline, and the Procfile stack as real processes."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from redis.client import Pipeline

from app.runs import NewRun

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): command.strip() for name, command in entries}


class Stack:
    """The Procfile processes, each started on its own, as a Procfile runner would."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = {
            **os.environ,
            **env,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self.logdir = logdir
        self.commands = procfile()
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.port = int(env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}"

    def run_release(self) -> None:
        subprocess.run(
            ["bash", "-c", self.commands["release"]], env=self.env, check=True, cwd=ROOT, timeout=60
        )

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        index = len(self.procs.get(name, []))
        # the child gets a copy of the file descriptor: ours can be closed at once
        with open(self.logdir / f"{name}.{index}.log", "ab") as log:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {self.commands[name]}"],
                env={**self.env, **(extra_env or {})},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.setdefault(name, []).append(proc)
        return proc

    def start_all(self, workers: int = 1) -> Stack:
        self.run_release()
        self.start("web")
        for _ in range(workers):
            self.start("worker")
        self.start("relay")
        self.start("scheduler")
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            try:
                return requests.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, timeout, interval=0.1, message="the web process to be ready")

    def signal(self, proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def kill(self, name: str, index: int = 0) -> None:
        proc = self.procs[name][index]
        self.signal(proc, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        running = [p for procs in self.procs.values() for p in procs if p.poll() is None]
        for proc in running:
            self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal(proc, signal.SIGKILL)
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logdir.glob("*.log"))
        )


def shell_quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def count_round_trips(
    ports: Any, monkeypatch: pytest.MonkeyPatch, trips: list[str], *, skip: tuple[str, ...] = ()
) -> None:
    """Records in `trips` each command sent alone and each non-empty pipeline executed."""
    send = ports.redis.execute_command
    execute = Pipeline.execute

    def one(*args: Any, **kwargs: Any) -> Any:
        if args[0] not in skip:
            trips.append(str(args[0]))
        return send(*args, **kwargs)

    def pipeline(self: Pipeline, raise_on_error: bool = True) -> Any:
        if self.command_stack:
            trips.append("pipeline")
        return execute(self, raise_on_error)

    monkeypatch.setattr(ports.redis, "execute_command", one)
    monkeypatch.setattr(Pipeline, "execute", pipeline)


def new_run(**fields: Any) -> NewRun:
    """What a submit of demo.echo by tenant alpha to queue default asks for, changed by `fields`."""
    defaults: dict[str, Any] = {
        "tenant": "alpha",
        "task": "demo.echo",
        "queue": "default",
        "input": None,
        "priority": 5,
        "max_attempts": 1,
        "backoff": None,
        "timeout_s": None,
        "metadata": {},
        "scheduled_for": None,
    }
    return NewRun(**(defaults | fields))
