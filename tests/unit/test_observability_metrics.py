"""The shared metrics' pieces without servers: batch observation, queue waits, settings, the
own-port server of a non-web process, the tail's reading of an event's time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError, Settings
from app.domain import RunStatus
from app.observability import metrics
from app.web.metrics import _event_at
from tests.unit.test_timings import T0, ms, run


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observing_a_batch_adds_up_as_observing_one_by_one() -> None:
    values = [0.0, 0.0005, 0.001, 0.0011, 0.3, 7.0, 7.0, 1e9, 2.5]
    observations = [((queue,), v) for v in values for queue in ("a", "b")][:-1]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    singly = Histogram(
        "h_seconds", "h", ["queue"], buckets=metrics.LAG_BUCKETS, registry=one_by_one
    )
    together = Histogram("h_seconds", "h", ["queue"], buckets=metrics.LAG_BUCKETS, registry=batched)
    for labels, value in observations:
        singly.labels(*labels).observe(value)
    metrics.observe_all(together, observations)
    assert _samples(batched) == _samples(one_by_one)
    assert _samples(batched)[("h_seconds_count", (("queue", "b"),))] == len(values) - 1


def test_queue_wait_is_from_when_the_run_became_due() -> None:
    assert metrics.queue_wait_s(run()) is None  # not started
    started = T0 + ms(250)
    queued = run(first_dispatched_at=T0, started_at=started)
    assert metrics.queue_wait_s(queued) == pytest.approx(0.25)
    # delayed: from its promotion, not from its creation
    promoted = run(scheduled_for=T0 + ms(100), first_dispatched_at=T0 + ms(120), started_at=started)
    assert metrics.queue_wait_s(promoted) == pytest.approx(0.13)
    # a retry after a backoff: from its new due time, not from its first dispatch
    retried = run(first_dispatched_at=T0, scheduled_for=T0 + ms(200), started_at=started)
    assert metrics.queue_wait_s(retried) == pytest.approx(0.05)
    # held back by a limit (dispatched_at moved by its release): the wait counts it
    held = run(first_dispatched_at=T0, dispatched_at=T0 + ms(240), started_at=started)
    assert metrics.queue_wait_s(held) == pytest.approx(0.25)
    # after a stall, from its re-queue
    stalled = run(first_dispatched_at=T0, dispatched_at=T0 + ms(240), stalls=1, started_at=started)
    assert metrics.queue_wait_s(stalled) == pytest.approx(0.01)
    # clocks a microsecond apart never make it negative
    assert metrics.queue_wait_s(run(first_dispatched_at=started, started_at=T0)) == 0.0


def test_a_worker_observes_attempts_and_finished_runs_by_bounded_labels() -> None:
    registry = CollectorRegistry()
    worker = metrics.WorkerMetrics(registry)
    claimed = run(status=RunStatus.RUNNING, started_at=T0 + ms(5), first_dispatched_at=T0)
    worker.claimed([claimed, run()])  # the unstarted one is not observed
    ended = run(status=RunStatus.SUCCEEDED, finished_at=T0 + timedelta(seconds=2))
    retrying = run(status=RunStatus.DELAYED)
    worker.recorded(
        [(claimed, "finish_attempt", 1.5), (claimed, "retry_attempt", 0.2),
         (claimed, "fail_attempt", 0.1), (claimed, "release_attempt", None)],
        [ended, retrying, None, retrying],
    )  # fmt: skip
    assert _samples(registry) == {}, "held until the recorder writes them"
    worker.recorder.flush()
    found = _samples(registry)
    assert found[("runlane_queue_wait_seconds_count", (("queue", "default"),))] == 1
    attempt = "runlane_attempt_duration_seconds_sum"
    labels = (("outcome", "succeeded"), ("queue", "default"), ("task", "t"))
    assert found[(attempt, labels)] == 1.5
    assert found[(attempt, (("outcome", "retried"), ("queue", "default"), ("task", "t")))] == 0.2
    assert not any(key[0] == attempt and ("outcome", "failed") in key[1] for key in found)
    succeeded = (("queue", "default"), ("status", "succeeded"), ("task", "t"))
    run_sum = ("runlane_run_duration_seconds_sum", succeeded)
    assert found[run_sum] == 2.0
    finished = ("runlane_runs_finished_total", (("queue", "default"), ("status", "succeeded")))
    assert found[finished] == 1


def test_settings_read_the_metrics_port_and_folder(tmp_path: Path) -> None:
    env = {"RUNLANE_API_TOKENS": "a:b", "RUNLANE_HOME": str(tmp_path)}
    assert Settings.from_env(env).metrics_port is None
    assert Settings.from_env(env).metrics_dir is None
    given = Settings.from_env(
        {**env, "RUNLANE_METRICS_PORT": "9187", "PROMETHEUS_MULTIPROC_DIR": "metrics"}
    )
    assert given.metrics_port == 9187
    assert given.metrics_dir == Path("metrics").absolute()
    for bad in ("http", "0", "70000"):
        with pytest.raises(ConfigError, match="RUNLANE_METRICS_PORT"):
            Settings.from_env({**env, "RUNLANE_METRICS_PORT": bad})


def test_copies_on_one_host_take_the_next_free_port(tmp_path: Path) -> None:
    from runlane.embedded import free_port

    settings = Settings(home=tmp_path, metrics_port=free_port())
    registries = [CollectorRegistry(), CollectorRegistry()]
    metrics.RelayMetrics(registries[0])
    metrics.SchedulerMetrics(registries[1])
    servers = [metrics.MetricsServer(settings, r).start() for r in registries]
    try:
        assert servers[0].port == settings.metrics_port
        assert servers[1].port > servers[0].port
        texts = [
            requests.get(f"http://127.0.0.1:{s.port}/metrics", timeout=5).text for s in servers
        ]
        names = [{f.name for f in text_string_to_metric_families(t)} for t in texts]
        assert "runlane_relay_lag_seconds" in names[0] - names[1]
        assert "runlane_stalls_found" in names[1] - names[0]
    finally:
        for server in servers:
            server.close()
    assert metrics.serve(Settings(home=tmp_path), CollectorRegistry()) is None


def test_a_tail_reads_the_event_time_as_postgres_renders_it() -> None:
    event = (
        '{"run_id" : "x", "seq" : 2, "type" : "run.log", '
        '"at" : "2030-01-02T03:04:05.250000Z", "data" : {"at" : "no"}}'
    )
    assert _event_at(event) == datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=UTC).timestamp()
    assert _event_at('{"type": "gap"}') is None
    assert _event_at('{"at" : "yesterday"}') is None
