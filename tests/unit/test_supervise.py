"""The dev stack's supervisor with real child processes: a death is restarted with a growing
delay and named in one line; a crash loop stops the stack with the last exit code."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

from honcho.printer import Printer

from runlane.cli.dev import forget_live_gauges
from runlane.cli.supervise import Supervisor, describe_exit
from tests.helpers import wait_for


def supervisor(out: io.StringIO, **kwargs: object) -> Supervisor:
    return Supervisor(Printer(out, prefix=False), **kwargs)  # type: ignore[arg-type]


def test_describe_exit_names_the_signal_or_the_code() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


def test_a_process_that_keeps_dying_stops_the_stack(tmp_path: Path) -> None:
    out = io.StringIO()
    sup = supervisor(out, delays=(0.05, 0.1))
    sup.add("crasher", "exit 3", dict(os.environ), str(tmp_path))
    sup.add("steady", "exec sleep 60", dict(os.environ), str(tmp_path))

    assert sup.loop() == 3
    text = out.getvalue()
    assert "crasher (pid" in text and "exited with code 3; restarting it in 0.05 s" in text
    assert "restarting it in 0.1 s" in text, "the delay grows"
    assert "died 5 times" in text and "crasher keeps dying: stopping the stack" in text
    assert all(child.runner is None for child in sup.children.values()), "nothing left running"


def test_a_killed_process_is_restarted_and_named(tmp_path: Path) -> None:
    out = io.StringIO()
    sup = supervisor(out, delays=(0.05,))
    marker = tmp_path / "starts"
    sup.add("worker", f"echo started >> {marker}; exec sleep 60", dict(os.environ), str(tmp_path))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.loop()), daemon=True)
    thread.start()
    child = sup.children["worker"]
    first = wait_for(lambda: child.pid, 10, message="the first start")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: child.pid not in (None, first) and child.pid, 10, message="a restart")
    assert f"worker (pid {first}) was killed by SIGKILL; restarting it in 0.05 s" in out.getvalue()
    wait_for(lambda: marker.read_text().count("started") == 2, 10, message="two starts")
    sup.stop("test over", 143)
    thread.join(15)
    assert result == [143]


def test_a_dead_process_leaves_its_live_gauges_but_not_its_counts(tmp_path: Path) -> None:
    """runlane dev's supervisor, on the stack's shared metrics folder."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    sup = supervisor(io.StringIO(), delays=(60,), on_death=forget_live_gauges(str(folder)))
    sup.add("worker", "exec sleep 60", dict(os.environ), str(tmp_path))
    thread = threading.Thread(target=sup.loop, daemon=True)
    thread.start()
    pid = wait_for(lambda: sup.children["worker"].pid, 10, message="the start")
    files = [folder / f"{kind}_{pid}.db" for kind in ("gauge_livesum", "counter", "histogram")]
    for path in files:
        path.write_bytes(b"")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not files[0].exists(), 10, message="the live gauge's file to go")
    assert files[1].exists() and files[2].exists()
    sup.stop("test over", 143)
    thread.join(15)
