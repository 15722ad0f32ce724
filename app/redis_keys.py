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

    def cancel(self, run_id: str, attempt: int) -> str:
        """Set when cancellation of this attempt of a run is requested; the worker running that
        attempt polls it. Per attempt, so that a retried run's next attempt never sees it."""
        return f"{self.prefix}:cancel:{run_id}:{attempt}"

    @property
    def relay_nudge(self) -> str:
        """A stream of one entry that a process appends to after a commit that wrote events; the
        relay blocks on it, so it publishes at once without polling Postgres (a slow poll is its
        fallback). MAXLEN 1: it stays one entry however long no relay reads it."""
        return f"{self.prefix}:relay:nudge"

    @property
    def ready_probe(self) -> str:
        """Written (expiring) by /readyz: Redis must take writes, not only answer."""
        return f"{self.prefix}:ready-probe"

    @property
    def epoch(self) -> str:
        """Written by the relay; gone means Redis lost its data and streams need rebuilding."""
        return f"{self.prefix}:epoch"

    def wake(self, listener: str) -> str:
        """A stream a web process's stream reader also blocks on, so new tails wake it at once."""
        return f"{self.prefix}:wake:{listener}"

    def worker_wake(self, worker: str) -> str:
        """A list a concurrent worker blocks on beside its queues: its threads push to it as they
        finish an attempt, so that the outcome is recorded at once."""
        return f"{self.prefix}:worker-wake:{worker}"

    @property
    def dispatch_sentinel(self) -> str:
        """Set by the scheduler; its absence means Redis lost its queues: re-dispatch them all."""
        return f"{self.prefix}:dispatch:sentinel"

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


# KEYS[1..n] = the run stream of each event, KEYS[n+1..] = the tenant streams, then (if ARGV[4]
# is "1") the epoch key
# ARGV[1] = n, ARGV[2] = run stream MAXLEN, ARGV[3] = tenant stream MAXLEN, ARGV[4] = "1" to
# write nothing and return -1 when the epoch key is gone (Redis lost its data: the relay must
# put the older entries back first, as a stream takes no id below its top), then two values per
# event: a header "seq tseq tenant-key-index type queue" (queue last: it may hold spaces) and the
# event JSON. Events come in tseq order per tenant, which is also seq order per run.
# Appends each event to its run stream (id seq-0) and tenant stream (id tseq-0, if tseq > 0),
# MAXLEN ~. An id not above the stream's top is already there (a relay repeating a batch it had
# no time to mark as published): skipped, not an error. Packed this way because encoding the
# arguments is what the relay spends most of its time on. Returns how many entries were new.
PUBLISH_EVENTS = """
local n = tonumber(ARGV[1])
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  return -1
end
local added = 0
local function append(key, maxlen, id, event, etype, queue)
  local reply = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, id .. '-0',
    'event', event, 'type', etype, 'queue', queue)
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'equal or smaller', 1, true) then
      error(reply.err)
    end
    return 0
  end
  return 1
end
for i = 1, n do
  local seq, tseq, t, etype, queue = string.match(ARGV[3 + 2 * i], '^(%d+) (%d+) (%d+) (%S+) (.*)$')
  local event = ARGV[4 + 2 * i]
  added = added + append(KEYS[i], ARGV[2], seq, event, etype, queue)
  if tseq ~= '0' then
    added = added + append(KEYS[n + tonumber(t)], ARGV[3], tseq, event, etype, queue)
  end
end
return added
"""


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


# KEYS = a worker's RQ queue lists ("rq:queue:..."), in priority order
# ARGV[1] = how many run ids to pop at most, ARGV[2] = RQ's job hash prefix ("rq:job:"),
# ARGV[3..] = ids the worker already popped (BLPOP) whose job hashes are to go too
# Pops up to ARGV[1] ids, strictly by priority and FIFO within one, deleting their RQ job hashes:
# a runlane worker needs only the id (= run id), and Postgres fences duplicate deliveries.
POP_RUN_IDS = """
local want = tonumber(ARGV[1])
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
for _, key in ipairs(KEYS) do
  if #ids >= want then break end
  local got = redis.call('LPOP', key, want - #ids)
  if got then
    for _, id in ipairs(got) do ids[#ids + 1] = id end
  end
end
for _, id in ipairs(ids) do redis.call('DEL', ARGV[2] .. id) end
return ids
"""


# KEYS[1] = an RQ queue list ("rq:queue:..."), KEYS[2] = RQ's set of queues ("rq:queues")
# ARGV[1] = RQ's job hash prefix ("rq:job:"), ARGV[2] = n, ARGV[3..2+2n] = the n field, value
# pairs every job shares (what RQ itself writes for one, app.dispatch), then three values per
# job: its id, its `data` and its `description`.
# Writes each job's hash and pushes the ids in order: what RQ's enqueue_many does for these jobs,
# in one call, because building and sending RQ's three commands per job was most of the time a
# batch of runs took to submit.
ENQUEUE_JOBS = """
local n = tonumber(ARGV[2])
local shared = {}
for i = 3, 2 + 2 * n do shared[#shared + 1] = ARGV[i] end
local ids = {}
for i = 3 + 2 * n, #ARGV, 3 do
  redis.call('HSET', ARGV[1] .. ARGV[i], 'data', ARGV[i + 1], 'description', ARGV[i + 2],
    unpack(shared))
  ids[#ids + 1] = ARGV[i]
end
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('RPUSH', KEYS[1], unpack(ids))
return #ids
"""
