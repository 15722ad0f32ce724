"""/metrics stays bounded whatever clients send: made-up methods and paths fold into one label
value each, so no request can add a time series of its own."""

from __future__ import annotations

import random
import re
import string

from flask.testing import FlaskClient

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
SERIES = re.compile(
    r'^runlane_http_requests_total\{method="([^"]*)",route="([^"]*)",status="([^"]*)"\}', re.M
)


def label_sets(client: FlaskClient) -> set[tuple[str, str, str]]:
    text = client.get("/metrics").get_data(as_text=True)
    return {match.groups() for match in SERIES.finditer(text)}


def test_made_up_methods_and_paths_fold_into_one_label_value_each(client: FlaskClient) -> None:
    rng = random.Random(7)
    for i in range(50):
        method = "".join(rng.choices(string.ascii_uppercase, k=6)) + str(i)
        # "/x": a path starting "//" reads to the test client as a host, and so as "/"
        path = "/x" + "".join(rng.choices(string.ascii_lowercase + "/", k=12)) + str(i)
        client.open(path, method=method)
        client.open("/healthz", method=method)
        client.get(path)
    client.get("/healthz")
    found = label_sets(client)
    assert {method for method, _, _ in found} <= KNOWN_METHODS | {"other"}
    assert {route for _, route, _ in found} <= {"/healthz", "/metrics", "unmatched"}
    assert len(found) <= 5, found  # other+unmatched+404/405, GET+unmatched+404, GET+/healthz+200
