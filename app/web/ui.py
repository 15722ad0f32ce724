"""The dashboard (contract §7): its one page for every /ui path, and its assets, shipped as files
in app/web/ui (no build step, nothing from another host). Not part of the /v1 API, so not in
/openapi.json (app.web.openapi.outside_the_api)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from flask import Blueprint, Response, current_app, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from app.web.errors import ApiError

bp = Blueprint("ui", __name__)

PAGE = "index.html"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_CACHE = "runlane.ui_assets"
_HOST = re.compile(
    r"[A-Za-z0-9.\-]+(?::\d+)?|\[[0-9A-Fa-f:.]+\](?::\d+)?"
)  # what a policy may name


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@bp.get("/")
def root() -> BaseResponse:
    return redirect("/ui", 302)  # relative: behind a proxy it stays on the proxy's host


@bp.get("/ui")
@bp.get("/ui/")
def index() -> BaseResponse:
    return _send(_asset(PAGE), page=True)


@bp.get("/ui/<path:rest>")
def page(rest: str) -> BaseResponse:
    """A path with an asset's suffix is that asset (or 404); any other is the page, whose
    script reads the path to open the view (the URLs of views can be shared)."""
    suffix = PurePosixPath(rest).suffix
    if suffix in TYPES and suffix != ".html":
        return _send(_asset(rest), page=False)
    return _send(_asset(PAGE), page=True)


def _asset(name: str) -> Asset:
    """The file `name` of app/web/ui, read once per process (misses are not kept: any path
    may be asked for)."""
    cache: dict[str, Asset] = current_app.extensions.setdefault(_CACHE, {})
    found = cache.get(name) or _read(name)
    if found is None:
        raise ApiError(404, "no such dashboard asset")
    cache[name] = found
    return found


def _read(name: str) -> Asset | None:
    parts = PurePosixPath(name).parts
    if not parts or any(part in ("..", ".") or part.startswith(".") for part in parts):
        return None
    file = resources.files("app.web").joinpath("ui", *parts)
    if not file.is_file():
        return None
    body = file.read_bytes()
    etag = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, TYPES[PurePosixPath(name).suffix], etag)


def _send(asset: Asset, *, page: bool) -> BaseResponse:
    response = Response(asset.body, content_type=asset.content_type)
    response.set_etag(asset.etag)
    # Revalidated each time (a cheap 304): a new release is seen at once, with no version in
    # every import of every module.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if page:
        response.headers["Content-Security-Policy"] = _policy()
        response.headers["Referrer-Policy"] = "no-referrer"
    else:
        # runlane.js is imported by users' own pages (contract §7): a module script from
        # another origin needs CORS. The assets hold no secret.
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response.make_conditional(request)


def _policy() -> str:
    """Everything from this origin only; the tails' WebSockets named too, since not every
    browser counts ws: of the same host as 'self'."""
    host = request.host
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return "; ".join(
        [
            "default-src 'self'",
            f"connect-src 'self'{sockets}",
            "img-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
