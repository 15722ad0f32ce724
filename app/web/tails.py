"""Live tails of runs: WebSocket and Server-Sent Events over the relay's Redis Streams."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("tails", __name__)
