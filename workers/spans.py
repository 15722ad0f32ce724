"""The spans of a worker's attempts, while tracing is on: each attempt one span in its run's
trace, with a child for its claim and one for its outcome's commit, and the task's own spans
inside it.

A claim and an outcome are committed for a batch of attempts at once (the group commit), and an
outcome is committed after its task returned, in the loop's next pass: so the attempt span is
opened at its claim's commit and ended at its outcome's, and the two children are recorded with
the commits' own start and end times.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from app.attempts import Change
from app.domain import Run
from app.observability import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

# what each change that ends an attempt says of it (runlane.outcome)
OUTCOMES = {
    "finish_attempt": "succeeded",
    "retry_attempt": "retrying",
    "fail_attempt": "failed",
    "cancel_running": "cancelled",
    "release_attempt": "released",  # handed back unstarted: its worker was stopping
}


class AttemptSpans:
    """The open attempt spans of one worker, by run id (an attempt in hand has one)."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._open: dict[str, Span] = {}
        self._lock = threading.Lock()  # claims and outcomes come from the loop, tasks' threads read

    def claimed(self, claimed: Sequence[Run], start_ns: int, end_ns: int) -> None:
        """The attempts a commit claimed, from `start_ns` to `end_ns` (ns since the epoch)."""
        from opentelemetry import trace

        tracer = tracing.tracer()
        for run in claimed:
            span = tracer.start_span(
                "runlane.attempt",
                context=tracing.parent_context(run.traceparent),
                kind=trace.SpanKind.CONSUMER,
                start_time=start_ns,
                attributes={
                    "runlane.worker": self.worker,
                    "runlane.attempt": run.attempt,
                    "runlane.run_id": run.id,
                    "runlane.queue": run.queue,
                    "runlane.task": run.task,
                },
            )
            child = trace.set_span_in_context(span)
            claim = tracer.start_span("runlane.claim", context=child, start_time=start_ns)
            claim.set_attribute("runlane.batch", len(claimed))
            claim.end(end_ns)
            with self._lock:
                self._open[run.id] = span

    @contextlib.contextmanager
    def running(self, run: Run) -> Iterator[str | None]:
        """The attempt's span current while its task runs (its own spans nest in it); yields
        the trace id."""
        from opentelemetry import trace

        with self._lock:
            span = self._open.get(run.id)
        if span is None:  # claimed before tracing was on
            yield tracing.trace_id_of(run.traceparent)
            return
        with trace.use_span(span, end_on_exit=False):
            yield f"{span.get_span_context().trace_id:032x}"

    def committed(
        self, changes: Sequence[Change], done: Sequence[Run | None], start_ns: int, end_ns: int
    ) -> None:
        """Outcomes committed from `start_ns` to `end_ns`: each attempt span's last child, its
        outcome, and its end. A change its guard refused ends the run cancelled (the executor
        follows it with a cancel)."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        tracer = tracing.tracer()
        for change, run in zip(changes, done, strict=True):
            with self._lock:
                span = self._open.pop(str(change.params["id"]), None)
            if span is None:
                continue
            outcome = OUTCOMES.get(change.query, change.query) if run is not None else "cancelled"
            child = trace.set_span_in_context(span)
            commit = tracer.start_span("runlane.commit", context=child, start_time=start_ns)
            commit.set_attribute("runlane.batch", len(changes))
            commit.end(end_ns)
            span.set_attribute("runlane.outcome", outcome)
            if outcome in ("failed", "retrying"):
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end(end_ns)
