"""Telemetry every process kind shares: Prometheus metrics and OpenTelemetry tracing."""
