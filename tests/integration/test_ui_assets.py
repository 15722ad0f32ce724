"""The dashboard as the web process serves it: the page for any /ui path under a strict
Content-Security-Policy, its assets with their content types and ETags, every module the page
imports present, and every asset shipped in the package."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from flask.testing import FlaskClient

from app.web import openapi
from tests.helpers import ROOT

UI = ROOT / "app" / "web" / "ui"
IMPORT = re.compile(r"""(?:import|from)\s*(?:[^"';]*?\sfrom\s*)?["'](\.{1,2}/[^"']+)["']""")


def test_root_redirects_to_the_dashboard(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui"


def test_every_view_path_is_the_page_under_a_strict_policy(client: FlaskClient) -> None:
    for path in ("/ui", "/ui/", "/ui/runs", "/ui/runs/not-even-a-uuid", "/ui/queues/a.b-c"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.content_type == "text/html; charset=utf-8"
        assert b'<script type="module" src="/ui/app.js">' in response.data
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self' ws://localhost wss://localhost" in policy
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy


def test_a_host_header_cannot_write_the_policy(client: FlaskClient) -> None:
    policy = client.get("/ui", headers={"Host": "x; script-src *"}).headers[
        "Content-Security-Policy"
    ]
    assert "script-src" not in policy and "connect-src 'self';" in policy


def test_assets_have_their_types_and_revalidate_by_etag(client: FlaskClient) -> None:
    assets = [("runlane.js", "text/javascript"), ("style.css", "text/css"),
              ("views/run.js", "text/javascript"), ("icon.svg", "image/svg+xml")]  # fmt: skip
    for name, kind in assets:
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.content_type.startswith(kind)
        assert response.headers["Cache-Control"] == "no-cache"
        etag = response.headers["ETag"]
        again = client.get(f"/ui/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304
    # users' own pages import runlane.js from another origin: a module script needs CORS
    assert client.get("/ui/runlane.js").headers["Access-Control-Allow-Origin"] == "*"


def test_a_missing_asset_is_a_404_problem(client: FlaskClient) -> None:
    for path in ("/ui/no.js", "/ui/views/../../ui.py.js", "/ui/.hidden.css", "/ui/%2e%2e/x.js"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.content_type == "application/problem+json"


def test_the_dashboard_is_not_in_the_api_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]
    rules = client.application.url_map.iter_rules()
    assert {r.rule for r in rules if openapi.outside_the_api(r)} >= {"/", "/ui", "/ui/<path:rest>"}


def test_every_module_imported_is_served(client: FlaskClient) -> None:
    modules = sorted(UI.rglob("*.js"))
    assert len(modules) >= 5
    for module in modules:
        for target in IMPORT.findall(module.read_text()):
            name = (module.parent / target).resolve().relative_to(UI)
            assert client.get(f"/ui/{name}").status_code == 200, f"{module.name} imports {target}"


def test_every_asset_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    for asset in UI.rglob("*"):
        if asset.is_file():
            name = str(asset.relative_to(ROOT / "app"))
            assert any(fnmatch(name, pattern) for pattern in patterns), f"{name} is not shipped"


def test_no_asset_names_another_host() -> None:
    for asset in UI.rglob("*"):
        if asset.suffix in (".js", ".css", ".html"):
            # comments may show an embed example; code may not name a host
            lines = asset.read_text().splitlines()
            text = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
            assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), asset.name


def test_a_page_file_is_under_the_size_a_reader_can_hold() -> None:
    for asset in UI.rglob("*.js"):
        assert len(Path(asset).read_text().splitlines()) < 400, asset.name
