"""Every Redis key, stream and Lua script runlane uses, in one place.

Redis is transport and cache only: everything here can be rebuilt from Postgres. All keys start
with a prefix (default "runlane") so that several stacks or tests can share one Redis database.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITIES = range(1, 11)
RUN_STREAM_MAXLEN = 10_000
TENANT_STREAM_MAXLEN = 100_000


@dataclass(frozen=True)
class Keys:
    prefix: str = "runlane"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{key}"

    def run_stream(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:events"

    def tenant_stream(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:events"

    def cancel(self, run_id: str) -> str:
        """Set when cancellation of a running attempt is requested; the worker polls it."""
        return f"{self.prefix}:cancel:{run_id}"

    @property
    def epoch(self) -> str:
        """Written by the relay; gone means Redis lost its data and streams need rebuilding."""
        return f"{self.prefix}:epoch"

    def wake(self, listener: str) -> str:
        """A stream a web process's stream reader also blocks on, so new tails wake it at once."""
        return f"{self.prefix}:wake:{listener}"

    def rq_queue(self, queue: str, priority: int) -> str:
        """The RQ queue name for one runlane queue at one priority: workers pop p1 before p2."""
        return f"{self.prefix}.{queue}.p{priority}"

    def rq_queues(self, queue: str) -> list[str]:
        return [self.rq_queue(queue, p) for p in PRIORITIES]


def stream_id(n: int) -> str:
    """Explicit stream IDs from seq/tseq: a repeated XADD of the same event is refused by Redis."""
    return f"{n}-0"


def stream_number(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


# KEYS[1] = idempotency key
# ARGV[1] = request fingerprint, ARGV[2] = in-flight lease in ms
# Returns {"claimed"} when this caller now owns the key, else
# {state ("inflight"|"done"), fingerprint, status, body} of the request that owns it.
IDEMPOTENCY_CLAIM = """
local existing = redis.call('HMGET', KEYS[1], 'state', 'fp', 'status', 'body')
if not existing[1] then
  redis.call('HSET', KEYS[1], 'state', 'inflight', 'fp', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'claimed'}
end
return existing
"""

# KEYS[1] = idempotency key
# ARGV[1] = fingerprint, ARGV[2] = response status, ARGV[3] = response body, ARGV[4] = ttl in ms
# Stores the response only if this request still owns the key (its lease may have expired).
IDEMPOTENCY_STORE = """
local fp = redis.call('HGET', KEYS[1], 'fp')
if fp and fp ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'fp', ARGV[1], 'status', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] = idempotency key, ARGV[1] = fingerprint
# Frees a key whose request was rejected, so the rejection does not consume it.
IDEMPOTENCY_RELEASE = """
local state = redis.call('HMGET', KEYS[1], 'state', 'fp')
if state[1] == 'inflight' and state[2] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
