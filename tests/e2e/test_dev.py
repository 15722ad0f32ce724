"""`runlane dev` (what scripts/run starts) on a fresh folder with no REDIS_URL / DATABASE_URL:
embedded servers, the whole stack, a run end to end, and nothing left behind after a stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.config import dev_token
from runlane.embedded import free_port
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.e2e
RUNLANE = Path(sys.executable).parent / "runlane"


def stack_processes(home: Path, port: int) -> list[psutil.Process]:
    """Every live process that belongs to a dev stack on `home` / `port`, wherever it was
    reparented to (Postgres daemonizes, so it is never a descendant of runlane dev)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            mentions = str(home) in " ".join(proc.cmdline())
            if mentions or env.get("RUNLANE_HOME") == str(home) or env.get("PORT") == str(port):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh RUNLANE_HOME outside pytest's temp folder: a concurrent pytest session resets that
    folder to mode 0700, which locks out the unprivileged user pgserver runs Postgres as."""
    path = Path(tempfile.mkdtemp(prefix="runlane-dev-"))
    yield path / "home"
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", ["sigterm", "ctrl-c"])
def test_dev_stack_runs_a_run_and_stops_without_leftovers(
    home: Path, tmp_path: Path, stop: str
) -> None:
    port = free_port()
    env = dev_env(home, port)
    log_path = tmp_path / "dev.log"
    dev = start_dev(env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(base, dev), 180, 0.2, "/readyz to answer 200")
        stack = psutil.Process(dev.pid).children(recursive=True) + stack_processes(home, port)
        token = dev_token(home)
        # printed once the web answers, by runlane dev itself: a moment after /readyz may
        wait_for(lambda: token in log_path.read_text(), 10, 0.05, "the dev token to be printed")

        run = submit_echo(base, token, {"hello": ["world", 1]})
        done = wait_for(lambda: finished(base, token, run["id"]), 60, 0.1, "the run to finish")
        assert done["status"] == "succeeded", done
        assert done["result"] == {"hello": ["world", 1]}
        # every process writes to the stack's one metrics folder: the web's /metrics has all
        wait_for(
            lambda: worker_and_relay_metrics(base), 10, 0.1, "the worker's and relay's metrics"
        )

        if stop == "sigterm":
            dev.send_signal(signal.SIGTERM)
        else:
            os.killpg(dev.pid, signal.SIGINT)
        dev.wait(60)
    except BaseException:
        print(log_path.read_text(errors="replace")[-20000:])
        raise
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)

    wait_for(lambda: not any(alive(p) for p in stack), 20, 0.1, "the stack's processes to exit")
    leftovers = stack_processes(home, port)
    assert leftovers == [], [p.cmdline() for p in leftovers]
    assert not list((home / "metrics").glob("stack-*")), "the stack's metrics folder is left"


def worker_and_relay_metrics(base: str) -> bool:
    text = requests.get(f"{base}/metrics", timeout=5).text
    samples = {
        (s.name, s.labels.get("queue"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return (
        samples.get(("runlane_queue_wait_seconds_count", "default", None)) == 1
        and samples.get(("runlane_runs_finished_total", "default", "succeeded")) == 1
        and samples.get(("runlane_relay_lag_seconds_count", "default", None), 0) >= 3
    )


def ready(base: str, dev: subprocess.Popen[bytes]) -> bool:
    assert dev.poll() is None, f"runlane dev exited with {dev.returncode}"
    try:
        return requests.get(f"{base}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def submit_echo(base: str, token: str, payload: object) -> dict:
    response = requests.post(
        f"{base}/v1/runs",
        json={"task": "demo.echo", "input": payload},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "dev-e2e-1"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def finished(base: str, token: str, run_id: str) -> dict | None:
    response = requests.get(
        f"{base}/v1/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    run = response.json()
    return run if run["status"] in {"succeeded", "failed", "cancelled"} else None


def dev_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """A user's environment: no servers given (embedded ones), no RUNLANE_* settings."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env = {k: v for k, v in env.items() if not k.startswith("RUNLANE_")}
    env.update(RUNLANE_HOME=str(home), PORT=str(port), PYTHONUNBUFFERED="1", **extra)
    return env


def start_dev(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`runlane dev` in a session of its own, so "Ctrl-C" can go to its whole process group as a
    terminal would, its output in `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [RUNLANE, "dev"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def worker_pids(dev: subprocess.Popen[bytes]) -> set[int]:
    found = set()
    for proc in psutil.Process(dev.pid).children(recursive=True):
        try:
            if "RunlaneWorker" in " ".join(proc.cmdline()) and alive(proc):
                found.add(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.timeout(300)
def test_a_second_stack_refuses_and_a_killed_worker_is_restarted(
    home: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = dev_env(home, port, RUNLANE_LEASE_SECONDS="3")
    log_path = tmp_path / "dev.log"
    dev = start_dev(env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(base, dev), 180, 0.2, "/readyz to answer 200")
        token = dev_token(home)

        # A second stack on the same home: one line, a non-zero exit, and the first untouched.
        second = subprocess.run(
            [RUNLANE, "dev"], env=dev_env(home, free_port()), cwd=ROOT, capture_output=True,
            text=True, timeout=30, check=False,
        )  # fmt: skip
        assert second.returncode != 0
        assert second.stderr.strip() == (
            f"runlane: a runlane stack already runs from {home}, pid {dev.pid}, port {port}"
        )
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200

        # kill -9 of the worker mid-run: restarted, named in the log, the run still finishes.
        run = submit(base, token, {"task": "demo.sleep", "input": {"seconds": 1.5}}, "dev-kill")
        wait_for(lambda: status(base, token, run["id"]) == "running", 30, 0.05, "the run to start")
        (victim,) = worker_pids(dev)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: worker_pids(dev) - {victim}, 30, 0.1, "a new worker process")
        assert f"worker.1 (pid {victim}) was killed by SIGKILL; restarting it in 1 s" in (
            log_path.read_text()
        )
        done = wait_for(lambda: finished(base, token, run["id"]), 60, 0.1, "the killed run")
        assert done["status"] == "succeeded", done
        assert dev.poll() is None, "the stack keeps running"
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(60) == 143
    except BaseException:
        print(log_path.read_text(errors="replace")[-20000:])
        raise
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
    wait_for(lambda: not stack_processes(home, port), 20, 0.1, "the stack's processes to exit")


def submit(base: str, token: str, body: dict, key: str) -> dict:
    response = requests.post(
        f"{base}/v1/runs",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def status(base: str, token: str, run_id: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{base}/v1/runs/{run_id}", headers=headers, timeout=5).json()["status"]
