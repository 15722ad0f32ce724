"""`runlane dev` checks before it starts anything: a port in use and task modules that do not
import are one clear line and a non-zero exit; "listening" is said only once the web answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.config import Settings
from tests.conftest import stack_env
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.e2e
RUNLANE = Path(sys.executable).parent / "runlane"


def dev_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLANE_")}
    return {**env, **stack_env(settings), "PYTHONUNBUFFERED": "1", **extra}


def run_dev(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNLANE, "dev"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_a_port_in_use_is_refused_before_anything_starts(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_dev(dev_env(settings, PORT=str(port)))
    assert result.returncode == 2
    assert result.stdout == "", "nothing was started"
    assert result.stderr.startswith(f"runlane: port {port} on 127.0.0.1 is in use")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_task_module_that_does_not_import_is_one_line(settings: Settings) -> None:
    result = run_dev(dev_env(settings, RUNLANE_TASK_MODULES="nope"))
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "runlane: RUNLANE_TASK_MODULES=nope: cannot load the tasks: "
        "ModuleNotFoundError: No module named 'nope'"
    )


@pytest.mark.timeout(120)
def test_listening_is_announced_once_the_web_answers(settings: Settings, tmp_path: Path) -> None:
    env = dev_env(settings)
    base = f"http://127.0.0.1:{env['PORT']}"
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        dev = subprocess.Popen(
            [RUNLANE, "dev"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "listening on" in log_path.read_text(), 60, 0.01, "the announcement")
        # the moment it is said, the web answers
        assert requests.get(f"{base}/healthz", timeout=2).status_code == 200
        line = next(li for li in log_path.read_text().splitlines() if "listening on" in li)
        assert line.endswith(f"| listening on {base}, data in {settings.home}")
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(30)
