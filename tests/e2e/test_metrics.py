"""Metrics of every process kind, scraped from real processes: under one shared multiprocess
folder (as `runlane dev` runs them) from the web's /metrics alone, and without it from each
non-web process's own RUNLANE_METRICS_PORT."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis import Redis

from app.config import Settings
from app.redis_keys import Keys
from runlane.embedded import free_port
from tests.conftest import TOKENS, auth
from tests.e2e.api import post_run, status_is
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e

# Every label a runlane metric may carry: bounded sets (le and quantile are Prometheus's own).
BOUNDED_LABELS = {"queue", "task", "outcome", "status", "reason", "method", "route", "le"}


def scrape(url: str) -> dict[str, list[Sample]]:
    """Samples by metric family, parsed as Prometheus would."""
    text = requests.get(url, timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return sum(found)


def assert_bounded(families: dict[str, list[Sample]], run_ids: set[str]) -> None:
    forbidden = run_ids | set(TOKENS.values())
    for name, samples in families.items():
        for sample in samples:
            assert sample.labels.keys() <= BOUNDED_LABELS, (name, sample.labels)
            assert not forbidden & set(sample.labels.values()), (name, sample.labels)


class SseTail:
    """A run's SSE tail read in a thread, opened before the run starts (so its events are live)."""

    def __init__(self, stack: Stack, run_id: str) -> None:
        self.types: list[str] = []
        headers = {**auth(), "Accept": "text/event-stream"}
        url = f"{stack.base}/v1/runs/{run_id}/events"
        self.response = requests.get(url, headers=headers, stream=True, timeout=30)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                self.types.append(line.removeprefix("event: "))


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "metrics"
    folder.mkdir()
    return folder


@pytest.mark.timeout(120)
def test_web_metrics_add_up_every_process_in_the_shared_folder(
    stack_factory: Callable[..., Stack], settings: Settings, redis: Redis, metrics_dir: Path
) -> None:
    stack = stack_factory(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    stack.run_release()
    for name in ("web", "relay", "scheduler"):
        stack.start(name)
    stack.wait_ready()
    url = f"{stack.base}/metrics"
    ids: set[str] = set()

    # No worker yet: the queue has work and no live worker (what the alert looks for).
    progress = post_run(stack, {"task": "demo.progress", "input": {"steps": 3, "interval_ms": 20}})
    ids.add(progress["id"])
    tail = SseTail(stack, progress["id"])
    gauges = scrape(url)
    assert value(gauges["runlane_runs_queued"], "runlane_runs_queued", queue="default") == 1
    assert value(gauges["runlane_runs_runnable"], "runlane_runs_runnable", queue="default") == 1
    assert value(gauges["runlane_workers_live"], "runlane_workers_live", queue="default") == 0

    # Redis "emptied": the scheduler dispatches every queued run again, counted per queue.
    redis.delete(Keys(settings.prefix).dispatch_sentinel)
    wait_for(
        lambda: value(
            scrape(url).get("runlane_sweep_redispatches", []),
            "runlane_sweep_redispatches_total",
            queue="default",
        ) >= 1,
        15, 0.1, "the scheduler's re-dispatch to be counted",
    )  # fmt: skip

    # A delayed run cancelled: the web ends it and counts it.
    delayed = post_run(stack, {"task": "demo.echo", "delay_ms": 600_000})
    ids.add(delayed["id"])
    # A flow's parent cancelled: its two queued children are cancelled with it, counted too.
    children = [{"task": "demo.echo"}, {"task": "demo.echo"}]
    parent = post_run(stack, {"task": "demo.collect", "children": children})
    ids.add(parent["id"])
    for run in (delayed, parent):
        cancel_url = f"{stack.base}/v1/runs/{run['id']}/cancel"
        cancel = requests.post(cancel_url, headers=auth(), timeout=10)
        assert cancel.status_code == 200, cancel.text

    worker_port = free_port()
    stack.start("worker", {"RUNLANE_METRICS_PORT": str(worker_port)})
    runs = [
        post_run(stack, {"task": "demo.echo", "input": {"a": 1}}),
        post_run(stack, {"task": "demo.fail", "input": {"times": 1}, "max_attempts": 2}),
        post_run(stack, {"task": "demo.fail", "input": {"times": 1, "unrecoverable": True}}),
    ]
    ids |= {run["id"] for run in runs}
    for run in [progress, *runs]:
        wait_for(status_is(stack, run["id"], "succeeded", "failed"), 30, 0.05, "runs to end")
    tail.thread.join(10)
    assert tail.types[-1] == "run.succeeded", tail.types

    # The worker's own port, in the shared folder, shows the same sums (its values are on disk,
    # written once a second): progress, echo, both attempts of the retried run, the unrecoverable.
    def waits(base: str) -> float:
        found = scrape(f"{base}/metrics").get("runlane_queue_wait_seconds", [])
        return value(found, "runlane_queue_wait_seconds_count", queue="default")

    worker_base = f"http://127.0.0.1:{worker_port}"
    wait_for(lambda: waits(stack.base) == 5, 10, 0.1, "the worker's metrics to be written")
    assert waits(worker_base) == 5

    # A worker killed mid-attempt: the scheduler finds the stall once the lease (3 s) expires.
    sleeper = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 30}})
    ids.add(sleeper["id"])
    wait_for(status_is(stack, sleeper["id"], "running"), 20, 0.05, "the sleeper to start")
    wait_for(lambda: waits(stack.base) == 6, 10, 0.1, "the sleeper's wait to be written")
    stack.kill("worker")
    wait_for(
        lambda: value(
            scrape(url).get("runlane_stalls_found", []),
            "runlane_stalls_found_total",
            queue="default",
        ) == 1,
        20, 0.2, "the stall to be counted",
    )  # fmt: skip

    def everything() -> dict[str, list[Sample]] | None:
        found = scrape(url)
        tails = found.get("runlane_tail_delivery_lag_seconds", [])
        # the progress run's started, 3 progress and succeeded events, sent live
        return found if value(tails, "runlane_tail_delivery_lag_seconds_count") >= 5 else None

    families = wait_for(everything, 10, 0.1, "the tail's lag to be observed")
    assert_bounded(families, ids)

    wait = families["runlane_queue_wait_seconds"]
    # progress, echo, both attempts of the retried run, the unrecoverable one, the sleeper
    assert value(wait, "runlane_queue_wait_seconds_count", queue="default") == 6
    attempts = families["runlane_attempt_duration_seconds"]
    count = "runlane_attempt_duration_seconds_count"
    assert value(attempts, count, task="demo.fail", outcome="retried") == 1
    assert value(attempts, count, task="demo.fail", outcome="succeeded") == 1
    assert value(attempts, count, task="demo.fail", outcome="failed") == 1
    assert value(attempts, count, task="demo.echo", outcome="succeeded") == 1
    assert value(attempts, "runlane_attempt_duration_seconds_sum", task="demo.progress") >= 0.02
    durations = families["runlane_run_duration_seconds"]
    assert value(durations, "runlane_run_duration_seconds_count", status="succeeded") == 3
    assert value(durations, "runlane_run_duration_seconds_count", status="failed") == 1
    finished = families["runlane_runs_finished"]
    total = "runlane_runs_finished_total"
    assert value(finished, total, queue="default", status="succeeded") == 3
    assert value(finished, total, queue="default", status="failed") == 1
    # by the web: the delayed run, the parent and its two children
    assert value(finished, total, queue="default", status="cancelled") == 4
    relay = families["runlane_relay_lag_seconds"]
    assert value(relay, "runlane_relay_lag_seconds_count", queue="default") >= 20
    assert value(relay, "runlane_relay_lag_seconds_bucket", queue="default", le="+Inf") >= 20


@pytest.fixture
def ports() -> Iterator[dict[str, int]]:
    yield {name: free_port() for name in ("worker", "relay", "scheduler")}


@pytest.mark.timeout(90)
def test_each_process_serves_its_own_metrics_port(
    stack_factory: Callable[..., Stack], ports: dict[str, int]
) -> None:
    stack = stack_factory()
    stack.run_release()
    stack.start("web")
    for name, port in ports.items():
        stack.start(name, {"RUNLANE_METRICS_PORT": str(port)})
    stack.wait_ready()
    run = post_run(stack, {"task": "demo.echo", "input": {}})
    wait_for(status_is(stack, run["id"], "succeeded"), 30, 0.05, "the run to succeed")

    def own(name: str) -> dict[str, list[Sample]]:
        return scrape(f"http://127.0.0.1:{ports[name]}/metrics")

    def worker_counted() -> dict[str, list[Sample]] | None:
        found = own("worker")
        done = value(found["runlane_runs_finished"], "runlane_runs_finished_total")
        return found if done == 1 else None

    worker = wait_for(worker_counted, 10, 0.1, "the worker to count the run")
    assert value(worker["runlane_queue_wait_seconds"], "runlane_queue_wait_seconds_count") == 1
    assert "runlane_relay_lag_seconds" not in worker  # each process shows its own only

    def relay_counted() -> dict[str, list[Sample]] | None:
        found = own("relay")
        sent = value(found["runlane_relay_lag_seconds"], "runlane_relay_lag_seconds_count")
        return found if sent >= 3 else None  # queued, started, succeeded

    relay = wait_for(relay_counted, 10, 0.1, "the relay to observe its lag")
    scheduler = own("scheduler")
    assert {"runlane_stalls_found", "runlane_sweep_redispatches"} <= scheduler.keys()
    for families in (worker, relay, scheduler):
        assert_bounded(families, {run["id"]})
    # the web's /metrics, without the shared folder, has the web's own metrics only
    web = scrape(f"{stack.base}/metrics")
    assert "runlane_queue_wait_seconds" not in web
    assert value(web["runlane_workers_live"], "runlane_workers_live", queue="default") == 1
