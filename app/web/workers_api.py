"""Workers: the live ones, with what they serve and the caller's runs they are running."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from app import live_workers
from app.web.auth import require_tenant, tenant
from app.web.current import services
from app.web.openapi import Reply, documented
from app.web.responses import WorkerList

bp = Blueprint("workers", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.get("/workers")
@documented("List live workers", responses={200: Reply("Live workers", WorkerList)})
def list_workers() -> dict[str, Any]:
    # Redis away: nothing of the list can be read, so the app's RedisError handler answers 503
    svc = services()
    workers = live_workers.live_workers(svc.redis, svc.keys)
    with svc.pool.connection() as conn:
        running = live_workers.running_by_worker(conn, tenant(), workers)
    return {"items": [worker.to_json(running[worker.name]) for worker in workers]}
