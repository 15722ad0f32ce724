"""Which Redis errors mean "away or no primary now" (wait and retry) and which are refusals."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ConnectionError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from app.services import primary_lost, redis_outage


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("refused"),
        TimeoutError("timed out"),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
        ResponseError("Error running script (call to f_1): @user_script:3: @user_script: "
                      "3: -READONLY You can't write against a read only replica."),
    ],
)  # fmt: skip
def test_an_outage(exc: Exception) -> None:
    assert redis_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [ResponseError("WRONGTYPE Operation against a key"), NoScriptError("NOSCRIPT"), ValueError()],
)
def test_a_refusal(exc: Exception) -> None:
    assert not redis_outage(exc)
    assert not primary_lost(exc)


def test_only_a_replicas_answers_drop_the_connections() -> None:
    assert primary_lost(ReadOnlyError("READONLY"))
    assert primary_lost(ResponseError("UNBLOCKED force unblock"))
    assert not primary_lost(ConnectionError("refused"))  # that connection is gone already
