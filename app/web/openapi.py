"""The OpenAPI 3.1 document, derived from the routes themselves: each view declares its operation
with @documented, and the document is built by walking the app's url_map, so a route without a
declaration is missing from it, which `undocumented` reports (and a test holds us to)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode
from werkzeug.routing import Map, Rule

from app.web.errors import PROBLEM_JSON
from app.web.fields import REGISTERED_TASK, STORABLE, STORABLE_JSON
from app.web.responses import EventList, Problem, RunOut
from app.web.schemas import NAME_PATTERN

Doc = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"
_ATTR = "runlane_openapi"
_CACHE = "runlane.openapi"
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})  # Werkzeug answers these for every route
# The contract names a run's (and a webhook's) path parameter {id}; the views call it run_id.
PATH_ALIASES = {"run_id": "id", "webhook_id": "id"}
OUTSIDE_BLUEPRINTS = ("ui.",)
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

ERRORS = {
    400: "The body is not JSON, or a header or query parameter is malformed",
    401: "Missing, unknown or expired bearer token",
    403: "A scoped token (POST /v1/tokens) used outside its runs, or to do more than read",
    404: "No such resource for this tenant",
    409: "The resource's state forbids this, or the same Idempotency-Key is in flight",
    413: "The body is larger than 1 MiB",
    422: "The JSON (or a query parameter) breaks a rule; `errors` names the offending fields",
    426: "A plain HTTP request to a WebSocket route: connect with `Upgrade: websocket`",
    503: "Redis or Postgres is unavailable (for /readyz: or the schema is not current); retry "
    "after `Retry-After` seconds",
}
# Headers that every answer of a status carries, whatever the route.
STATUS_HEADERS = {
    401: {"WWW-Authenticate": "`Bearer`: how to authenticate"},
    503: {"Retry-After": "seconds to wait before trying again"},
}
HEADER_ONLY = (
    "The token goes in the `Authorization: Bearer` header: only the tails and the Server-Sent "
    "Events form of GET /v1/runs/{id}/events also take it as `?token=`."
)
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": HEADER_ONLY},
    "token": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The bearer token as a query parameter, for browsers, whose WebSocket and "
        "EventSource cannot set headers; refused everywhere else.",
    },
}


@dataclass(frozen=True)
class Param:
    """A path parameter (named as in the rule) or a header, with its JSON schema."""

    name: str
    schema: Doc
    description: str = ""


@dataclass(frozen=True)
class Reply:
    """A response with a description of its own: a JSON `model`, and any other media types."""

    description: str
    model: type[BaseModel] | None = None
    content: Mapping[str, Doc] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # name: description; always sent


# A documented status: a JSON model (2xx), a Reply, or None (no body; for >= 400 the problem).
Answer = type[BaseModel] | Reply | None


@dataclass(frozen=True)
class Operation:
    """`@documented(summary, responses={...}, ...)`: declares a view's operation. The builder adds
    what the route implies: 401 under /v1 (every /v1 route needs a token), 503 when it reads
    Redis or Postgres (`storage`), 400/413/422 with a `body`, and for a `websocket` (the model of
    each message it sends) 101, 400 and 426. `token_query`: `?token=` is accepted too."""

    summary: str
    _: KW_ONLY
    responses: Mapping[int, Answer]
    description: str = ""
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    path: Sequence[Param] = ()
    headers: Sequence[Param] = ()
    websocket: type[BaseModel] | None = None
    token_query: bool = False
    storage: bool = True
    tags: Sequence[str] = ()

    def __call__(self, view: F) -> F:
        setattr(view, _ATTR, self)
        return view


documented = Operation


def websocket_twin(view: F) -> F:
    """Marks the plain-HTTP twin of WebSocket routes (it answers 426): the WebSocket route of the
    same path documents the operation, so the twin is not documented again."""
    setattr(view, _ATTR, None)
    return view


def document(app: Flask) -> Doc:
    """The app's document, built at its first request (every route is registered by then)."""
    found: Doc | None = app.extensions.get(_CACHE)
    if found is None:
        found = app.extensions[_CACHE] = build(app)
    return found


def build(app: Flask) -> Doc:
    schemas = _Schemas()
    paths: dict[str, Doc] = {}
    for rule in app.url_map.iter_rules():
        operation = getattr(app.view_functions.get(rule.endpoint), _ATTR, None)
        if not isinstance(operation, Operation):
            continue  # undocumented: `undocumented` reports it; or a twin
        item = paths.setdefault(openapi_path(rule), {})
        for method in methods(rule):
            item[method.lower()] = _operation(rule, operation, schemas)
    schemas.ref(Problem)
    schemas.found["StorableJson"] = STORABLE_JSON  # named by the models' schemas, recursive
    _resolve_markers(schemas.found, sorted(app.extensions["runlane"].registry.tasks))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runlane",
            "version": "1",
            "description": "Redis-native job runner. No input, however malformed, gets a 5xx: "
            "503 means Redis or Postgres is away. " + HEADER_ONLY,
        },
        "paths": paths,
        "components": {"schemas": schemas.found, "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": []}],
    }


def _resolve_markers(node: Any, tasks: list[str]) -> None:
    """What the models mark for the document: a task name field takes one of `tasks`, those this
    app registers (any other is refused with 422); a storable JSON value refers to StorableJson."""
    if isinstance(node, dict):
        if node.pop(next(iter(REGISTERED_TASK)), False):
            node["enum"] = tasks
        if node.pop(next(iter(STORABLE)), False):
            node["$ref"] = REF.format(model="StorableJson")
        for value in node.values():
            _resolve_markers(value, tasks)
    elif isinstance(node, list):
        for value in node:
            _resolve_markers(value, tasks)


def outside_the_api(rule: Rule) -> bool:
    """Routes that serve a browser, not API clients: Flask's static files and the dashboard
    (app.web.ui: its page, its assets and the / redirect), which the document leaves out."""
    endpoint = str(rule.endpoint)
    return endpoint == "static" or endpoint.startswith(OUTSIDE_BLUEPRINTS)


def undocumented(url_map: Map, doc: Doc) -> list[str]:
    """Every route of `url_map` (but those outside the API) with a method that `doc` lacks, as
    "METHOD /rule (endpoint)"."""
    missing = []
    for rule in url_map.iter_rules():
        if outside_the_api(rule):
            continue
        item = doc["paths"].get(openapi_path(rule), {})
        missing += [
            f"{method} {rule.rule} ({rule.endpoint})"
            for method in methods(rule)
            if method.lower() not in item
        ]
    return missing


def openapi_path(rule: Rule) -> str:
    """`/v1/runs/<run_id:run_id>/tail` as the document writes it: `/v1/runs/{id}/tail`."""
    return _RULE_ARGUMENT.sub(lambda m: "{" + PATH_ALIASES.get(m[1], m[1]) + "}", rule.rule)


def methods(rule: Rule) -> list[str]:
    return sorted(set(rule.methods or ()) - IMPLICIT_METHODS)


def _operation(rule: Rule, op: Operation, schemas: _Schemas) -> Doc:
    v1 = rule.rule.startswith("/v1/")
    found: Doc = {
        "operationId": rule.endpoint,
        "summary": op.summary,
        "tags": list(op.tags) or [rule.endpoint.partition(".")[0]],
    }
    if op.description:
        found["description"] = op.description
    parameters = [
        *_path_params(rule, op.path),
        *_query_params(op.query, schemas),
        *(_param(header, "header") for header in op.headers),
    ]
    if parameters:
        found["parameters"] = parameters
    if op.body is not None:
        content = {"application/json": {"schema": schemas.ref(op.body, "validation")}}
        found["requestBody"] = {"required": True, "content": content}
    found["responses"] = _responses(op, v1=v1, schemas=schemas)
    if op.websocket is not None:
        found["x-websocket"] = {
            "protocol": "RFC 6455",
            "server-messages": {
                "contentMediaType": "application/json",
                **schemas.ref(op.websocket),
            },
            "description": "Each text message the server sends is one JSON value of this schema; "
            "what the client sends is ignored.",
        }
    security: list[Doc] = [{"bearer": []}, {"token": []}] if op.token_query else [{"bearer": []}]
    found["security"] = security if v1 else []
    return found


def _path_params(rule: Rule, declared: Iterable[Param]) -> list[Doc]:
    by_name = {param.name: param for param in declared}
    names = _RULE_ARGUMENT.findall(rule.rule)
    if set(by_name) - set(names):
        raise ValueError(f"{rule.endpoint} documents path parameters {rule.rule} lacks")
    found = []
    for name in names:
        param = by_name.get(name, Param(name, {"type": "string"}))
        found.append(_param(Param(PATH_ALIASES.get(name, name), param.schema, param.description)))
    return found


def _param(param: Param, where: str = "path", *, required: bool | None = None) -> Doc:
    found: Doc = {
        "name": param.name,
        "in": where,
        "required": where == "path" if required is None else required,
        "schema": param.schema,
    }
    if param.description:
        found["description"] = param.description
    return found


def _query_params(model: type[BaseModel] | None, schemas: _Schemas) -> list[Doc]:
    """A query model's fields as query parameters; `X | None` fields as plain X (absent is None)."""
    if model is None:
        return []
    schema = schemas.inline(model, "validation")
    required = set(schema.get("required", ()))
    found = []
    for name, prop in schema["properties"].items():
        prop = {key: value for key, value in prop.items() if key != "title"}
        description = prop.pop("description", "")
        alternatives = [one for one in prop.pop("anyOf", ()) if one != {"type": "null"}]
        if len(alternatives) == 1:
            prop.update(alternatives[0])
        elif alternatives:
            prop["anyOf"] = alternatives
        if prop.get("default", 0) is None:
            del prop["default"]
        param = _param(Param(name, prop, description), "query", required=name in required)
        param["allowEmptyValue"] = True  # `?status=` counts as not given (app.web.current)
        found.append(param)
    return found


def _responses(op: Operation, *, v1: bool, schemas: _Schemas) -> Doc:
    answers = dict(op.responses)
    implied = {401, 403} if v1 else set()  # 403: a scoped token outside its scope
    if op.storage:
        implied.add(503)
    if op.body is not None:
        implied |= {400, 413, 422}
    if op.websocket is not None:
        implied |= {400, 426}
        answers.setdefault(
            101,
            Reply(
                "Switching Protocols; then one JSON text message per item, schema "
                + op.websocket.__name__,
                op.websocket,
            ),
        )
    for status in implied:
        answers.setdefault(status, None)
    return {str(status): _response(status, answers[status], schemas) for status in sorted(answers)}


def _response(status: int, answer: Answer, schemas: _Schemas) -> Doc:
    headers = {**STATUS_HEADERS.get(status, {})}
    if isinstance(answer, Reply):
        description, model, content = answer.description, answer.model, dict(answer.content)
        headers.update(answer.headers)
    elif answer is None:
        description, model, content = ERRORS.get(status, HTTPStatus(status).phrase), None, {}
    else:
        description, model, content = _first_line(answer) or HTTPStatus(status).phrase, answer, {}
    if status >= 400:  # every error is a problem, whatever else was said
        content = {PROBLEM_JSON: {"schema": schemas.ref(Problem)}}
    elif model is not None:
        content = {"application/json": {"schema": schemas.ref(model)}, **content}
    found: Doc = {"description": description}
    if headers:
        found["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    if content:
        found["content"] = content
    return found


def _first_line(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""


class _Schemas:
    """The components: each model's JSON schema, and the models it refers to."""

    def __init__(self) -> None:
        self.found: Doc = {}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> Doc:
        found, schema = {"$ref": REF.format(model=model.__name__)}, self.inline(model, mode)
        if schema != found:  # a recursive model (RunCreate) comes back as its own reference
            self._add(model.__name__, schema)
        return found

    def inline(self, model: type[BaseModel], mode: JsonSchemaMode) -> Doc:
        """The model's own schema; the models it refers to become components."""
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        return schema

    def _add(self, name: str, schema: Doc) -> None:
        if self.found.setdefault(name, schema) != schema:
            # a model whose input and output schemas differ would need two names
            raise ValueError(f"two different JSON schemas are named {name}")


# Parameters that more than one view declares.
RUN_ID = Param("run_id", {"type": "string", "format": "uuid"})
NAME = Param("name", {"type": "string", "pattern": NAME_PATTERN})
# RFC 9110: a field value has no leading or trailing whitespace, so neither has a key.
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~](?:[ -~]*[!-~])?$"},
    "1-255 printable ASCII characters; the same key and body replay the first response",
)
EVENTS = Reply(
    "The run's events with seq > after; as Server-Sent Events (id: seq, event: type) when Accept "
    "is text/event-stream, resuming after Last-Event-ID and ending after the terminal event",
    EventList,
    {"text/event-stream": {"schema": {"type": "string"}}},
)
FINISHED = Reply(
    "Server-Sent Events only: the run is finished and nothing is after the cursor (a 204 tells an "
    "EventSource to stop reconnecting)"
)
# A header's value is text: the pattern says which texts are seqs (blank means none).
LAST_EVENT_ID = Param(
    "Last-Event-ID",
    {"type": "string", "pattern": r"^\s*[0-9]{0,10}\s*$"},
    "resume after this seq (what an EventSource sends on reconnecting)",
)
CREATED = Reply(
    "Created (or replayed: Idempotent-Replayed: true)",
    RunOut,
    headers={"Location": "the run's URL, /v1/runs/{id}"},
)
DEDUPLICATED = Reply(
    "A live run holds the dedupe key: that run, nothing created (debounced: with this input)",
    RunOut,
    headers={"Deduplicated": "true"},
)
