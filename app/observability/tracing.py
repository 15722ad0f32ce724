"""OpenTelemetry tracing, off unless configured (Settings.tracing): each process kind's tracer
provider, the W3C traceparent a run is submitted under, and links to a run's trace.

Off, nothing of OpenTelemetry is imported: every hot-path function here is one check of a
module flag. Entry points call `setup` (gunicorn in each worker, after the fork); the SDK's
exporter threads cannot cross a fork, so a provider is never made before one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from app import logs
from app.config import Settings

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Link, Tracer

SERVICES = ("runlane-web", "runlane-worker", "runlane-relay", "runlane-scheduler")
TRACER = "runlane"
# version-traceid-parentid-flags (W3C Trace Context §3.2); a later version may append fields
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_HEADER = 512  # a longer value is refused unread
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

_provider: TracerProvider | None = None  # set by setup (or use): this process exports traces
_tracer: Tracer | None = None


def setup(settings: Settings, service: str) -> bool:
    """An entry point's tracer provider, named `service`, exporting as the settings say (OTLP
    over HTTP, or the console); whether tracing is on. Off, nothing is imported."""
    if not settings.tracing:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace with `provider` (made by setup, or a test's), or stop tracing (None). It becomes
    the global provider, so that tasks' own spans (opentelemetry.trace.get_tracer) join."""
    global _provider, _tracer
    _provider, _tracer = provider, None
    if provider is None:
        logs.trace_ids_from(None)
        return
    from opentelemetry import trace

    if trace.get_tracer_provider() is not provider:
        trace.set_tracer_provider(provider)  # refused (a log line) if another one was set
    _tracer = provider.get_tracer(TRACER)
    logs.trace_ids_from(_current_trace_id)


def shutdown() -> None:
    """At an entry point's exit: export what is left, then stop tracing."""
    provider = _provider
    use(None)
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Tracer:
    """runlane's own tracer; only while tracing is on."""
    assert _tracer is not None, "tracing is off"
    return _tracer


def instrument_flask(app: Flask) -> None:
    """A server span for each request of `app` (a child of its traceparent header, if valid)."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    instrument = FlaskInstrumentor().instrument_app
    instrument(app, tracer_provider=_provider)  # type: ignore[no-untyped-call]  # no type hints


# -- traceparents -------------------------------------------------------------------------------


def parse_traceparent(value: str | None) -> str | None:
    """A W3C traceparent header as version 00, or None when it is absent or malformed (which
    the spec says to ignore, as if none had been sent)."""
    if not value or len(value) > _MAX_HEADER:
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or rest == "-":
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a stored traceparent."""
    return traceparent[3:35] if traceparent else None


def current_traceparent() -> str | None:
    """The current span's context as a traceparent (tracing on, in a span), else None."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parent_context(traceparent: str | None) -> Context | None:
    """The context a span continuing `traceparent` starts in (None: a new trace)."""
    if _tracer is None or traceparent is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def link_to(traceparent: str | None, **attributes: Any) -> Link | None:
    """A span link to the run's trace: what the relay's publish (and a webhook's delivery)
    carries for the runs it acts on. None while tracing is off, or without a traceparent."""
    if _tracer is None or traceparent is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span(parent_context(traceparent)).get_span_context()
    if not context.is_valid:
        return None
    return trace.Link(context, attributes or None)


def _current_trace_id() -> str | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def _exporter(settings: Settings) -> SpanExporter:
    if settings.otel_traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if settings.otel_endpoint is None:  # the SDK's default, localhost:4318
        return OTLPSpanExporter()
    # the base URL, as the SDK reads it from the variable; its headers and timeout it reads itself
    return OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces")
