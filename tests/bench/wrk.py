"""The submit load from wrk (Debian's `wrk`), which costs far less CPU than Python clients:
POST /v1/runs with a unique Idempotency-Key per request, its figures read from a Lua summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

# Each wrk thread has a Lua state of its own: the thread number and a counter make every key
# unique; done() prints one JSON line that the benchmark parses.
SCRIPT = """
-- thread_id is set per thread by setup() as a global of that thread's state: not a local here
local counter = 0
local threads = {}
thread_id = 0
function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end
wrk.method = "POST"
wrk.body = '{"task": "demo.noop", "input": {}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = string.format("wrk-RUN-%d-%d", thread_id, counter)
  return wrk.format()
end
function done(summary, latency, requests)
  local statuses = summary.errors.status
  io.write(string.format(
    '{"requests": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, statuses,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def drive(base: str, token: str, clients: int, seconds: float, run_id: str) -> dict[str, object]:
    """wrk with `clients` connections on 2 threads for `seconds`; the same keys as drive()."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "submit.lua"
        script.write_text(SCRIPT.replace("TOKEN", token).replace("RUN", run_id))
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:g}s", "--timeout", "10s",
             "-s", str(script), f"{base}/v1/runs"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )  # fmt: skip
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    errors = summary["non_2xx"] + summary["socket_errors"]
    return {
        "requests": summary["requests"],
        "seconds": seconds,
        "errors": errors,
        "statuses": {"2xx": summary["requests"] - summary["non_2xx"], "errors": errors},
        "p50": summary["p50_us"] / 1e6,
        "p99": summary["p99_us"] / 1e6,
        "generator": "wrk",
    }
