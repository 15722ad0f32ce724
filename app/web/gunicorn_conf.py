"""Gunicorn settings for the Procfile `web` line: threads for websocket tails, one /metrics view
aggregated over every worker process, an access log (if asked for) that never shows a token.

Gunicorn reads this module's globals, so they are computed when it is loaded (its entry point).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from app.config import Settings
from app.logs import REDACTED, redact_url
from app.observability import tracing

_settings = Settings.from_env()


bind = f"{_settings.bind_host}:{_settings.port}"
# gthread: a websocket tail holds a thread for its whole life, so each process needs many.
worker_class = "gthread"
workers = _settings.web_concurrency
threads = _settings.web_threads
# Below honcho's 5 s kill wait, so `runlane dev` sees a clean exit.
graceful_timeout = 4
keepalive = 5
accesslog = "-" if _settings.access_log else None


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """Gunicorn's logger (its `logger_class` hook), with every access-log atom that can hold a
    URL stripped of `?token=` values (browsers' tails send one) and the Authorization header
    blanked, whatever `access_log_format` asks for."""

    URL_ATOMS = ("q", "f", "{query_string}e", "{raw_uri}e", "{http_referer}e", "{referer}i")
    SECRET_ATOMS = ("{authorization}i", "{http_authorization}e")

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        uri = redact_url(environ.get("RAW_URI", ""))
        atoms["r"] = f"{environ.get('REQUEST_METHOD')} {uri} {environ.get('SERVER_PROTOCOL')}"
        for name in self.URL_ATOMS:
            if isinstance(atoms.get(name), str):
                atoms[name] = redact_url(atoms[name])
        for name in self.SECRET_ATOMS:
            if name in atoms:
                atoms[name] = REDACTED
        return atoms


logger_class = RedactingLogger
errorlog = "-"
proc_name = "runlane-web"
# Gunicorn 23+ opens a control socket at one fixed path in $HOME; several web processes on one
# machine (scaling out, parallel tests) would take it from each other. runlane does not use it.
control_socket_disable = True


def _own_folder() -> Path:
    return _settings.home / "metrics" / f"web-{os.getpid()}"


def on_starting(server: Any) -> None:
    """Give prometheus_client a folder before any worker imports it (they inherit env): the one
    the stack's processes share (`runlane dev`, PROMETHEUS_MULTIPROC_DIR), else a fresh one."""
    if _settings.metrics_dir is not None:
        _settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        return
    folder = _own_folder()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def post_fork(server: Any, worker: Any) -> None:
    """Each worker process its own tracer provider: the exporter's thread and connection
    cannot cross the fork, so the arbiter never makes one."""
    tracing.setup(_settings, "runlane-web")


def worker_exit(server: Any, worker: Any) -> None:
    tracing.shutdown()  # export the spans still batched


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """The web's own folder goes with it; a shared one is its owner's (it outlives a restart)."""
    if _settings.metrics_dir is None:
        shutil.rmtree(_own_folder(), ignore_errors=True)
