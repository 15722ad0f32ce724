"""The process supervisor of `runlane dev`: runs the Procfile's processes with their output
prefixed, restarts one that dies (with a growing delay, like `rq worker-pool`), and stops the
stack only on Ctrl-C / SIGTERM or when a process dies in a loop.

honcho runs each command and relays its output (its Process and Printer); its Manager stops every
process as soon as one exits, which is right for a deployment's process manager and wrong for a
development stack, so the loop that decides what a death means is ours.
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from honcho.colour import get_colours
from honcho.printer import Message, Printer
from honcho.process import Process

RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0)
HEALTHY_AFTER_S = 30.0  # a process that ran this long starts its delays over
LOOP_DEATHS = 5  # this many deaths within LOOP_WINDOW_S is a crash loop: give up
LOOP_WINDOW_S = 60.0
KILL_WAIT_S = 5.0  # between SIGTERM and SIGKILL at shutdown
SYSTEM = "runlane"
RETURN_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Child:
    name: str
    cmd: str
    env: dict[str, str]
    cwd: str
    colour: str
    pid: int | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    fast_deaths: int = 0
    deaths: deque[float] = field(default_factory=lambda: deque(maxlen=LOOP_DEATHS))
    runner: Any = None  # the multiprocessing.Process relaying its output


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: "exited with code 1", "was killed by SIGKILL"."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Supervisor:
    def __init__(
        self,
        printer: Printer,
        *,
        delays: tuple[float, ...] = RESTART_DELAYS_S,
        loop_window_s: float = LOOP_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        on_death: Callable[[int], None] | None = None,
    ) -> None:
        self.printer = printer
        self.on_death = on_death  # given the pid of each process that ended
        self.delays = delays
        self.loop_window_s = loop_window_s
        self.clock = clock
        self.children: dict[str, Child] = {}
        self.events: multiprocessing.Queue[Message] = multiprocessing.Queue()
        self.returncode: int | None = None
        self._stopping_since: float | None = None
        self._colours = get_colours()

    def add(self, name: str, cmd: str, env: dict[str, str], cwd: str) -> None:
        self.children[name] = Child(name, cmd, env, cwd, next(self._colours))
        self.printer.width = max(self.printer.width, len(name), len(SYSTEM))

    def say(self, text: str) -> None:
        now = datetime.datetime.now()
        self.printer.write(Message("line", text + "\n", now, SYSTEM, None))

    def loop(self) -> int:
        """Until every process is gone after a stop; returns the stack's exit code."""

        def stop(signum: int, frame: Any) -> None:
            self.stop(f"{signal.Signals(signum).name} received", RETURN_CODES[signum])

        if threading.current_thread() is threading.main_thread():  # else the caller stops us
            for signum in RETURN_CODES:
                signal.signal(signum, stop)
        for child in self.children.values():
            self._start(child)
        while not (self._stopping_since is not None and self._all_gone()):
            with contextlib.suppress(queue.Empty):
                self._handle(self.events.get(timeout=0.1))
            self._tick(self.clock())
        return self.returncode if self.returncode is not None else 0

    def stop(self, why: str, returncode: int) -> None:
        if self._stopping_since is not None:
            return
        self.say(f"{why}: stopping the stack")
        self.returncode = returncode
        self._stopping_since = self.clock()
        self._signal_all(signal.SIGTERM)

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.pid = None
        child.started_at = self.clock()
        process = Process(
            child.cmd, name=child.name, colour=child.colour, env=child.env, cwd=child.cwd
        )
        child.runner = multiprocessing.Process(
            name=child.name, target=process.run, args=(self.events, True), daemon=False
        )
        child.runner.start()

    def _handle(self, msg: Message) -> None:
        child = self.children[msg.name]
        if msg.type == "line":
            self.printer.write(msg)
        elif msg.type == "start":
            child.pid = msg.data["pid"]
            if self._stopping_since is not None:  # started while the stop went out
                self._signal_all(signal.SIGTERM)
        elif msg.type == "stop":
            child.runner.join()
            child.runner = None
            self._died(child, msg.data["returncode"])

    def _died(self, child: Child, returncode: int) -> None:
        pid, child.pid = child.pid, None
        if pid is not None and self.on_death is not None:
            self.on_death(pid)
        if self._stopping_since is not None:
            return
        now = self.clock()
        how = f"{child.name} (pid {pid}) {describe_exit(returncode)}"
        child.deaths.append(now)
        if len(child.deaths) == LOOP_DEATHS and now - child.deaths[0] <= self.loop_window_s:
            self.say(f"{how}; it died {LOOP_DEATHS} times in {now - child.deaths[0]:.0f} s")
            self.stop(f"{child.name} keeps dying", returncode or 1)
            return
        if now - child.started_at >= HEALTHY_AFTER_S:
            child.fast_deaths = 0
        delay = self.delays[min(child.fast_deaths, len(self.delays) - 1)]
        child.fast_deaths += 1
        child.restart_at = now + delay
        self.say(f"{how}; restarting it in {delay:g} s")

    def _tick(self, now: float) -> None:
        if self._stopping_since is None:
            for child in self.children.values():
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
        elif now - self._stopping_since > KILL_WAIT_S:
            self._signal_all(signal.SIGKILL)
            self._stopping_since = now  # again each grace period until all are gone

    def _signal_all(self, signum: int) -> None:
        for child in self.children.values():
            child.restart_at = None
            if child.pid is not None:
                # each command runs in a session of its own, led by the program itself (exec)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signum)

    def _all_gone(self) -> bool:
        return all(child.runner is None for child in self.children.values())
