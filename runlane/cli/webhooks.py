"""The `runlane webhooks` command: without an action, the Procfile's `webhooks` process; with
one, the client commands that make, list, delete, test an endpoint and show its deliveries."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from app.config import Settings
from runlane.cli import output
from runlane.cli.commands import Cli, client_action

if TYPE_CHECKING:
    from runlane.cli import AddCommand


def cmd_process(args: argparse.Namespace) -> int:
    from app import logs
    from workers import webhooks

    logs.configure()
    webhooks.main(Settings.from_env())
    return 0


def cmd_create(args: argparse.Namespace, cli: Cli) -> int:
    endpoint = cli.client.create_webhook(args.endpoint_url, args.events, args.queue)

    note = "(shown this once: keep it to verify the webhook-signature header)"
    cli.show(
        endpoint, lambda: endpoint_block(endpoint, ("secret", endpoint["secret"])) + "\n" + note
    )
    return 0


def cmd_list(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.webhooks()
    cli.show(body, lambda: endpoint_table(body["items"]) or "no webhook endpoints")
    return 0


def cmd_delete(args: argparse.Namespace, cli: Cli) -> int:
    cli.client.delete_webhook(args.id)
    cli.show({"deleted": args.id}, lambda: f"deleted webhook endpoint {args.id}")
    return 0


def cmd_deliveries(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.webhook_deliveries(args.id, args.limit)
    cli.show(body, lambda: attempt_table(body["items"]) or "no delivery attempts yet")
    return 0


def cmd_test(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.test_webhook(args.id)
    cli.show(body, lambda: f"queued a webhook.ping to {args.id} (webhook-id {body['webhook_id']})")
    return 0


def endpoint_block(endpoint: dict[str, Any], *more: tuple[str, str]) -> str:
    return output.block([
        ("id", endpoint["id"]),
        ("url", endpoint["url"]),
        ("events", ", ".join(endpoint["events"])),
        ("queue", endpoint.get("queue") or "any"),
        *more,
    ])  # fmt: skip


def endpoint_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    rows = [
        (e["id"], e["url"], ",".join(e["events"]), e.get("queue") or "any", e["created_at"])
        for e in items
    ]
    return output.table(["ID", "URL", "EVENTS", "QUEUE", "CREATED"], rows)


def attempt_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    rows = [
        (
            a["at"], a["event_type"], a.get("run_id") or "-", str(a["attempt"]),
            str(a["status_code"]) if a.get("status_code") is not None else a.get("error") or "-",
            f"{a['duration_ms']} ms", a.get("next_attempt_at") or "-",
        )
        for a in items
    ]  # fmt: skip
    return output.table(["AT", "EVENT", "RUN", "TRY", "ANSWER", "TOOK", "NEXT RETRY"], rows)


def events_list(text: str) -> list[str]:
    """An argparse type: comma-separated event types (run.succeeded,run.failed), or *."""
    found = [part.strip() for part in text.split(",") if part.strip()]
    if not found:
        raise argparse.ArgumentTypeError("give event types, e.g. run.succeeded,run.failed, or *")
    return found


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (a whole number of at least 1)")
    return int(text)


def register(command: AddCommand) -> None:
    webhooks = command(
        "webhooks",
        cmd_process,
        "without an action: deliver webhooks (Procfile webhooks); with one: manage endpoints",
        epilog="examples:\n  runlane webhooks   (the process)\n"
        "  runlane webhooks create https://example.com/hook --events run.succeeded,run.failed\n"
        "  runlane webhooks list\n  runlane webhooks deliveries ID --limit 20\n"
        "  runlane webhooks test ID\n  runlane webhooks delete ID",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = webhooks.add_subparsers(metavar="ACTION", title="actions")

    def action(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        return client_action(actions, name, func, help)

    create = action("create", cmd_create, "make an endpoint; prints its signing secret once")
    # not `url`: that is the server's (--url)
    create.add_argument(
        "endpoint_url", metavar="URL", help="where to POST the events (http or https)"
    )
    create.add_argument(
        "--events",
        type=events_list,
        default=["*"],
        metavar="TYPES",
        help="comma-separated event types, e.g. run.succeeded,run.failed (default: * for all)",
    )
    create.add_argument("--queue", metavar="QUEUE", help="only runs of this queue (default: any)")
    action("list", cmd_list, "list your endpoints")
    for name, func, help in (
        ("delete", cmd_delete, "delete an endpoint and its pending deliveries"),
        ("test", cmd_test, "queue a webhook.ping delivery to an endpoint"),
    ):
        action(name, func, help).add_argument("id", metavar="ID", help="the endpoint's id")
    deliveries = action("deliveries", cmd_deliveries, "list an endpoint's delivery attempts")
    deliveries.add_argument("id", metavar="ID", help="the endpoint's id")
    deliveries.add_argument(
        "--limit", type=positive, metavar="N", help="at most N attempts, newest first (50)"
    )
