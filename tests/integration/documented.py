"""Responses checked against /openapi.json: the status is one its route documents, and a JSON body
validates against the schema documented for that route, method, status and media type."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator, FormatChecker
from werkzeug.exceptions import HTTPException
from werkzeug.test import TestResponse

from app.web import openapi

Doc = dict[str, Any]
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
FORMATS = FormatChecker()
FORMATS.checks("date-time")(lambda value: not isinstance(value, str) or bool(RFC3339.match(value)))


class DocumentedClient(FlaskClient):
    """The Flask test client, failing the test on any response that /openapi.json does not
    document. Bodies that are not JSON (a metrics text, an event stream) are left unread."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        check_response(self.application, response)
        return response


def check_response(app: Flask, response: TestResponse) -> None:
    environ = response.request.environ
    method = environ["REQUEST_METHOD"]
    doc = openapi.document(app)
    try:
        rule, _ = app.url_map.bind_to_environ(environ).match(return_rule=True)
    except HTTPException:  # no route (404, 405): an error of Flask's, which must be a problem
        _validate_problem(doc, response, f"{method} {environ['PATH_INFO']}")
        return
    if method in openapi.IMPLICIT_METHODS or openapi.outside_the_api(rule):
        return
    template = openapi.openapi_path(rule)
    op = doc["paths"].get(template, {}).get(method.lower())
    label = f"{method} {template} -> {response.status_code}"
    assert op is not None, f"{method} {rule.rule} is not in /openapi.json"
    check_documented(doc, op, response, label)


def check_documented(doc: Doc, op: Doc, response: TestResponse, label: str) -> None:
    """The status is documented, and a JSON body validates against the documented schema."""
    documented = op["responses"].get(str(response.status_code))
    assert documented is not None, f"{label}: status {response.status_code} is not documented"
    content = documented.get("content", {})
    if response.status_code == 204:
        assert not response.get_data() and not content, f"{label}: a 204 with a body"
        return
    assert response.mimetype in content, f"{label}: {response.mimetype} is not documented"
    schema = content[response.mimetype].get("schema")
    if schema is not None and response.mimetype.endswith("json"):
        _validate(doc, schema, response, label)


def _validate_problem(doc: Doc, response: TestResponse, label: str) -> None:
    assert response.mimetype == "application/problem+json", f"{label}: {response.mimetype}"
    _validate(doc, {"$ref": "#/components/schemas/Problem"}, response, label)


def _validate(doc: Doc, schema: Doc, response: TestResponse, label: str) -> None:
    body = response.get_json(force=True, silent=True)
    assert body is not None, f"{label}: the body is not JSON: {response.get_data()[:200]!r}"
    validator = Draft202012Validator(
        {**schema, "components": doc["components"]}, format_checker=FORMATS
    )
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.absolute_path))
    assert not errors, f"{label}: the body breaks its schema: " + "; ".join(
        f"{'/'.join(map(str, error.absolute_path)) or 'body'}: {error.message}"
        for error in errors[:5]
    )
