"""The HTTP API: everything only the web process uses.

This package imports nothing when it is imported: gunicorn loads app.web.gunicorn_conf before the
app, and prometheus_client must not be imported before that config has named its multiprocess
folder (it reads the folder once, at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The Flask app (see app.web.factory.create_app); gunicorn's `app.web:create_app()`."""
    from app.web.factory import create_app as build

    return build(*args, **kwargs)
