"""The client commands for what runs run on: queues (and pausing them), tasks, workers and
schedules, with their human views."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runlane.cli import output
from runlane.cli.commands import (
    INPUT_HELP,
    Cli,
    client_action,
    client_command,
    duration,
    json_value,
)

if TYPE_CHECKING:
    from runlane.cli import AddCommand

# The statuses in the order a run moves through them; a queue's other counts follow.
COUNT_ORDER = ("waiting", "queued", "delayed", "running", "succeeded", "failed", "cancelled")


# --- queues -------------------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.queues()
    cli.show(body, lambda: queue_table(body["items"], cli.style) or "no queues yet")
    return 0


def cmd_pause(args: argparse.Namespace, cli: Cli) -> int:
    queue = cli.client.pause(args.queue)
    cli.show(
        queue,
        lambda: (
            f"paused queue {queue['name']}: your runs in it start only after "
            f"`runlane resume {queue['name']}` (running attempts finish)"
        ),
    )
    return 0


def cmd_resume(args: argparse.Namespace, cli: Cli) -> int:
    queue = cli.client.resume(args.queue)
    counts = queue.get("counts") or {}
    cli.show(
        queue,
        lambda: f"resumed queue {queue['name']}: {counts.get('queued', 0)} queued runs may start",
    )
    return 0


def queue_table(queues: Sequence[dict[str, Any]], style: output.Style) -> str:
    """One line per queue: paused or not, live workers, counts by status, limits if any. A queue
    with runs waiting for a worker that nobody runs gets a warning below the table."""
    if not queues:
        return ""
    seen = {status for queue in queues for status in queue.get("counts") or {}}
    statuses = [s for s in COUNT_ORDER if s in seen] + sorted(seen - set(COUNT_ORDER))
    with_limits = any(limits_text(queue.get("limits")) != "-" for queue in queues)
    headers = ["QUEUE", "STATE", "WORKERS", *(s.upper() for s in statuses)]
    headers += ["LIMITS"] if with_limits else []
    rows, warnings = [], []
    for queue in queues:
        counts = queue.get("counts") or {}
        row = [
            queue["name"],
            "paused" if queue.get("paused") else "active",
            str(queue.get("workers", 0)),
            *(str(counts.get(s, 0)) for s in statuses),
        ]
        rows.append(row + ([limits_text(queue.get("limits"))] if with_limits else []))
        if not queue.get("workers") and counts.get("queued"):
            warnings.append(
                f"! {queue['name']}: {counts['queued']} queued, but no live worker "
                "serves it (see RUNLANE_QUEUES)"
            )

    def paint(col: int, text: str) -> str:
        if col == 1 and text == "paused":
            return style.paint(text, "yellow")
        return style.paint(text, "red") if col == 2 and text == "0" else text

    return "\n".join([output.table(headers, rows, paint), *warnings])


def limits_text(limits: Any) -> str:
    """`concurrency 5, rate 10/1s, key_rate 2/1m`; `-` for none."""
    if not isinstance(limits, dict):
        return "-"
    parts = []
    for name, value in limits.items():
        if isinstance(value, dict):
            period = output.format_duration(float(value.get("period_s") or 0))
            parts.append(f"{name} {value.get('limit')}/{period}")
        elif value is not None:
            parts.append(f"{name} {value}")
    return ", ".join(parts) or "-"


# --- tasks and workers --------------------------------------------------------------------------


def cmd_tasks(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.tasks()
    cli.show(body, lambda: task_table(body["items"]) or "no tasks registered")
    return 0


def task_table(tasks: Sequence[dict[str, Any]]) -> str:
    if not tasks:
        return ""
    rows = [
        [
            task["name"],
            task.get("queue") or "default",
            str(task.get("max_attempts") or 1),
            backoff_text(task.get("backoff")),
            output.format_duration(task["timeout_s"]) if task.get("timeout_s") else "-",
            task.get("description") or "",
        ]
        for task in tasks
    ]
    return output.table(["TASK", "QUEUE", "ATTEMPTS", "BACKOFF", "TIMEOUT", "DESCRIPTION"], rows)


def backoff_text(policy: Any) -> str:
    """`exponential 500ms`, `fixed 2s jitter 0.2`; `-` for none."""
    if not isinstance(policy, dict):
        return "-"
    text = f"{policy.get('type')} {output.format_duration((policy.get('delay_ms') or 0) / 1000)}"
    return text + (f" jitter {policy['jitter']}" if policy.get("jitter") else "")


def cmd_workers(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.workers()
    cli.show(body, lambda: worker_table(body["items"], cli.now()) or "no live workers")
    return 0


def worker_table(workers: Sequence[dict[str, Any]], now: datetime) -> str:
    if not workers:
        return ""
    rows = [
        [
            worker["name"],
            str(worker.get("hostname") or "-"),
            str(worker.get("pid") or "-"),
            ",".join(worker.get("queues") or []) or "-",
            str(worker.get("concurrency") or 1),
            output.relative(worker.get("started_at"), now),
            output.relative(worker.get("last_heartbeat"), now),
            _running(worker.get("running") or []),
        ]
        for worker in workers
    ]
    headers = ["WORKER", "HOST", "PID", "QUEUES", "CONCURRENCY", "STARTED", "HEARTBEAT", "RUNNING"]
    return output.table(headers, rows)


def _running(run_ids: Sequence[str]) -> str:
    """The first run's id, and how many more: enough to `runlane get` one."""
    if not run_ids:
        return "-"
    return run_ids[0] + (f" +{len(run_ids) - 1}" if len(run_ids) > 1 else "")


# --- schedules ----------------------------------------------------------------------------------


def cmd_schedules(args: argparse.Namespace, cli: Cli) -> int:
    body = cli.client.schedules()
    cli.show(body, lambda: schedule_table(body["items"], cli.now()) or "no schedules")
    return 0


def cmd_schedule_create(args: argparse.Namespace, cli: Cli) -> int:
    trigger = {"cron": args.cron} if args.cron else {"every_s": args.every}
    fields = {"queue": args.queue, **trigger}
    given = {name: value for name, value in fields.items() if value is not None}
    reply = cli.client.create_schedule(args.name, args.task, args.input, **given)
    schedule = reply.body
    done = "created" if reply.status == 201 else "replaced"

    def human() -> str:
        next_fire = output.relative(schedule.get("next_fire_at"), cli.now())
        return (
            f"{done} schedule {schedule['name']}: {schedule['task']} "
            f"{trigger_text(schedule)}, next run {next_fire}"
        )

    cli.show(schedule, human)
    return 0


def cmd_schedule_delete(args: argparse.Namespace, cli: Cli) -> int:
    cli.client.delete_schedule(args.name)
    cli.show({"deleted": args.name}, lambda: f"deleted schedule {args.name}")
    return 0


def schedule_table(schedules: Sequence[dict[str, Any]], now: datetime) -> str:
    if not schedules:
        return ""
    rows = [
        [
            item["name"],
            item["task"],
            item.get("queue") or "(task's)",
            trigger_text(item),
            output.relative(item.get("next_fire_at"), now),
            output.compact(item.get("input"), 40),
        ]
        for item in schedules
    ]
    return output.table(["SCHEDULE", "TASK", "QUEUE", "TRIGGER", "NEXT", "INPUT"], rows)


def trigger_text(schedule: dict[str, Any]) -> str:
    if schedule.get("cron"):
        return f"cron {schedule['cron']}"
    return f"every {output.format_duration(float(schedule.get('every_s') or 0))}"


# --- registration -------------------------------------------------------------------------------


def register(command: AddCommand) -> None:
    client_command(
        command,
        "queues",
        cmd_queues,
        "list queues: paused, live workers, your runs by status, limits",
        "runlane queues",
        "runlane queues --json",
    )
    for name, func, help in (
        ("pause", cmd_pause, "hold your runs in a queue (running attempts finish)"),
        ("resume", cmd_resume, "let a paused queue's runs start again"),
    ):
        cmd = client_command(command, name, func, help, f"runlane {name} emails")
        cmd.add_argument("queue", metavar="QUEUE", help="the queue's name")
    client_command(
        command, "tasks", cmd_tasks, "list the registered tasks and their defaults", "runlane tasks"
    )
    client_command(
        command,
        "workers",
        cmd_workers,
        "list the live workers: queues, heartbeat, what they run",
        "runlane workers",
    )
    _schedules(command)


def _schedules(command: AddCommand) -> None:
    schedules = client_command(
        command,
        "schedules",
        cmd_schedules,
        "list, create or delete schedules (default: list)",
        "runlane schedules",
        "runlane schedules create nightly demo.echo --cron '0 3 * * *' --input '{\"a\": 1}'",
        "runlane schedules create ping demo.noop --every 5m",
        "runlane schedules delete nightly",
    )
    actions = schedules.add_subparsers(metavar="ACTION", title="actions")

    def action(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        return client_action(actions, name, func, help)

    action("list", cmd_schedules, "list your schedules")
    create = action(
        "create", cmd_schedule_create, "create a schedule, or replace the one of that name"
    )
    create.add_argument("name", metavar="NAME", help="the schedule's name, unique per tenant")
    create.add_argument("task", metavar="TASK", help="the task each firing runs")
    create.add_argument(
        "--input",
        type=json_value,
        metavar="JSON",
        help="each run's input: " + INPUT_HELP + " (default null)",
    )
    create.add_argument("--queue", metavar="QUEUE", help="the runs' queue (default: the task's)")
    trigger = create.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--cron", metavar="EXPR", help="a cron expression, e.g. '*/5 * * * *'")
    trigger.add_argument(
        "--every",
        type=duration("s"),
        metavar="DURATION",
        help="a fixed interval: 30s, 5m, 1h, or plain seconds",
    )
    delete = action("delete", cmd_schedule_delete, "delete a schedule")
    delete.add_argument("name", metavar="NAME", help="the schedule's name")
