"""/openapi.json is derived from the routes: every route of the app is in it with every method it
accepts, and a route that nobody documented is reported."""

from __future__ import annotations

from flask import Blueprint, Flask
from flask.testing import FlaskClient

from app.services import Services
from app.web import create_app, openapi
from app.web.openapi import Reply, documented
from app.web.responses import Health


def test_every_route_is_in_the_document_with_every_method(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert openapi.undocumented(app.url_map, doc) == []
    routes = {
        (openapi.openapi_path(rule), method.lower())
        for rule in app.url_map.iter_rules()
        if not openapi.outside_the_api(rule)
        for method in openapi.methods(rule)
    }
    documented_ops = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert routes == documented_ops
    assert len(routes) >= 18


def test_a_route_nobody_documented_is_reported(services: Services) -> None:
    app = create_app(services=services)
    extra = Blueprint("extra", __name__, url_prefix="/v1")

    @extra.route("/things/<thing_id>", methods=["GET", "PUT"])
    def thing(thing_id: str) -> dict[str, str]:
        return {"status": thing_id}

    app.register_blueprint(extra)
    # a new method on a documented path is a route of its own
    app.add_url_rule("/v1/runs", "drop_runs", lambda: "", methods=["DELETE"])
    doc = app.test_client().get("/openapi.json").get_json()
    assert sorted(openapi.undocumented(app.url_map, doc)) == [
        "DELETE /v1/runs (drop_runs)",
        "GET /v1/things/<thing_id> (extra.thing)",
        "PUT /v1/things/<thing_id> (extra.thing)",
    ]


def test_a_documented_route_is_in_the_document_as_declared(services: Services) -> None:
    app = create_app(services=services)
    extra = Blueprint("extra", __name__, url_prefix="/v1")

    @extra.get("/runs/<run_id>/things")
    @documented("A thing", path=[openapi.RUN_ID], responses={200: Reply("The thing", Health)})
    def thing(run_id: str) -> dict[str, str]:
        return {"status": run_id}

    app.register_blueprint(extra)
    doc = app.test_client().get("/openapi.json").get_json()
    assert openapi.undocumented(app.url_map, doc) == []
    op = doc["paths"]["/v1/runs/{id}/things"]["get"]
    assert op["parameters"] == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
    ]
    # /v1 routes need a token (one that may do this) and read the stores: 401, 403 and 503
    assert set(op["responses"]) == {"200", "401", "403", "503"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"
    }
    assert op["security"] == [{"bearer": []}]
