"""Idempotency: key syntax, fingerprint canonicalisation, the Redis scripts' logic (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest
from redis.exceptions import NoScriptError

from app.redis_keys import Keys
from app.web.errors import ApiError
from app.web.idempotency import LEASE_MS, Claim, IdempotencyStore, fingerprint, parse_key


@pytest.fixture
def store() -> IdempotencyStore:
    return IdempotencyStore(fakeredis.FakeRedis(), Keys("t"), ttl_s=60)


def test_keys_are_1_to_255_printable_ascii() -> None:
    assert parse_key(None) is None
    assert parse_key("a") == "a"
    assert parse_key("order 42: ~!") == "order 42: ~!"
    assert parse_key("k" * 255) == "k" * 255
    for bad in ("", "k" * 256, "caf\u00e9", "tab\there", "nl\n", "\x7f"):
        with pytest.raises(ApiError) as caught:
            parse_key(bad)
        assert caught.value.status == 400


def test_fingerprint_is_canonical() -> None:
    a = fingerprint("POST", "/v1/runs", {"task": "t", "input": {"x": 1, "y": [1, 2]}})
    b = fingerprint("POST", "/v1/runs", {"input": {"y": [1, 2], "x": 1}, "task": "t"})
    assert a == b
    assert len(a) == 64


def test_fingerprint_tells_requests_apart() -> None:
    base = fingerprint("POST", "/v1/runs", {"task": "t"})
    assert base != fingerprint("POST", "/v1/runs", {"task": "u"})
    assert base != fingerprint("POST", "/v1/other", {"task": "t"})
    assert base != fingerprint("PUT", "/v1/runs", {"task": "t"})
    assert fingerprint("POST", "/v1/runs", {"l": [1, 2]}) != fingerprint(
        "POST", "/v1/runs", {"l": [2, 1]}
    )


def test_first_claim_owns_the_key_with_a_lease(store: IdempotencyStore) -> None:
    assert store.claim("alpha", "k", "fp1").claim is Claim.CLAIMED
    ttl = store.redis.pttl(store.keys.idempotency("alpha", "k"))
    assert 0 < ttl <= LEASE_MS


def test_same_request_while_in_flight(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    assert store.claim("alpha", "k", "fp1").claim is Claim.IN_FLIGHT


def test_different_request_is_a_mismatch_in_flight_or_done(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    assert store.claim("alpha", "k", "fp2").claim is Claim.MISMATCH
    store.store("alpha", "k", "fp1", 201, b"{}")
    assert store.claim("alpha", "k", "fp2").claim is Claim.MISMATCH


def test_stored_response_is_replayed_for_the_ttl(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    store.store("alpha", "k", "fp1", 201, b'{"id": "r1"}')
    outcome = store.claim("alpha", "k", "fp1")
    assert (outcome.claim, outcome.status, outcome.body) == (Claim.REPLAY, 201, b'{"id": "r1"}')
    assert store.redis.pttl(store.keys.idempotency("alpha", "k")) > LEASE_MS


def test_a_store_in_a_pipeline_is_only_added_to_it_by_sha(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    pipe = store.redis.pipeline(transaction=False)
    pipe.set("t:other", "1")
    store.store("alpha", "k", "fp1", 201, b"{}", pipeline=pipe)
    assert store.claim("alpha", "k", "fp1").claim is Claim.IN_FLIGHT  # nothing sent yet
    # a fresh Redis (or one restarted) has not the script: the caller stores again without a
    # pipeline, which loads it; the pipeline's other commands ran
    with pytest.raises(NoScriptError):
        pipe.execute()
    assert store.redis.get("t:other") == b"1"
    store.store("alpha", "k", "fp1", 201, b"{}")
    pipe = store.redis.pipeline(transaction=False)
    store.store("alpha", "k2", "fp1", 201, b"{}", pipeline=pipe)
    pipe.execute()
    assert store.claim("alpha", "k2", "fp1").claim is Claim.REPLAY


def test_keys_are_scoped_to_the_tenant(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    assert store.claim("beta", "k", "fp2").claim is Claim.CLAIMED


def test_release_frees_an_in_flight_key_of_the_same_request(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    store.release("alpha", "k", "fp2")  # another request cannot free it
    assert store.claim("alpha", "k", "fp1").claim is Claim.IN_FLIGHT
    store.release("alpha", "k", "fp1")
    assert store.claim("alpha", "k", "fp2").claim is Claim.CLAIMED


def test_release_never_drops_a_stored_response(store: IdempotencyStore) -> None:
    store.claim("alpha", "k", "fp1")
    store.store("alpha", "k", "fp1", 201, b"{}")
    store.release("alpha", "k", "fp1")
    assert store.claim("alpha", "k", "fp1").claim is Claim.REPLAY


def test_store_does_not_overwrite_another_requests_claim(store: IdempotencyStore) -> None:
    # our lease ran out and a different request claimed the key meanwhile
    store.claim("alpha", "k", "fp2")
    store.store("alpha", "k", "fp1", 201, b"{}")
    assert store.claim("alpha", "k", "fp2").claim is Claim.IN_FLIGHT


def test_redis_down_means_unavailable() -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    store = IdempotencyStore(fakeredis.FakeRedis(server=server), Keys("t"), ttl_s=60)
    assert store.claim("alpha", "k", "fp1").claim is Claim.UNAVAILABLE
    store.release("alpha", "k", "fp1")  # best effort: no error
