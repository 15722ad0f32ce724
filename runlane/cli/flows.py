"""`runlane submit`: one run, a flow (a run that waits for its children, contract §5.4) or a
batch read from a JSONL file (§5.5); and the tree of a flow's runs that `runlane get` shows."""

from __future__ import annotations

import argparse
import codecs
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from app.config import ConfigError
from runlane.cli import output
from runlane.cli.commands import (
    INPUT_HELP,
    Cli,
    backoff,
    duration,
    hint,
    json_object,
    json_value,
    rfc3339,
)

if TYPE_CHECKING:
    from runlane.client import ApiError, Client

# The options of one run (by dest), which a batch's lines carry themselves instead.
RUN_OPTIONS = ("input", "queue", "priority", "delay", "run_at", "max_attempts", "backoff",
               "timeout", "metadata", "limit_key", "dedupe_key", "dedupe_ttl", "debounce",
               "children", "on_child_failure")  # fmt: skip
_ITEM = re.compile(r"\bruns\[(\d+)\](\.?)")  # a batch item's field in a 422: runs[3].priority


# --- one run or a flow --------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace, cli: Cli) -> int:
    if _is_batch(args):
        return cmd_batch(args, cli)
    fields = run_fields(args)
    reply = cli.client.submit_reply(args.task, args.input, idempotency_key=args.key, **fields)
    run = reply.body
    if args.quiet:
        print(run["id"], flush=True)
        return 0
    cli.show(run, lambda: output.submitted(run, reply.headers, cli.now(), cli.style))
    if not cli.json and run["status"] not in output.FINISHED and sys.stderr.isatty():
        hint(f"follow it: runlane tail {run['id']}")
    return 0


def run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The run's optional fields from the options given. ConfigError (exit 2) for an option
    that needs another one."""
    if args.on_child_failure is not None and args.children is None:
        raise ConfigError("--on-child-failure needs --child or --children-file")
    fields = {
        "queue": args.queue,
        "priority": args.priority,
        "delay_ms": round(args.delay * 1000) if args.delay is not None else None,
        "run_at": args.run_at,
        "max_attempts": args.max_attempts,
        "backoff": args.backoff,
        "timeout_s": args.timeout,
        "metadata": args.metadata,
        "limit_key": args.limit_key,
        "dedupe": _dedupe(args),
        "children": args.children,
        "on_child_failure": args.on_child_failure,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _dedupe(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.dedupe_key is None:
        if args.dedupe_ttl is not None or args.debounce is not None:
            raise ConfigError("--dedupe-ttl and --debounce need --dedupe-key")
        return None
    dedupe: dict[str, Any] = {"key": args.dedupe_key}
    if args.dedupe_ttl is not None:
        dedupe["ttl_s"] = args.dedupe_ttl
    if args.debounce is not None:
        dedupe["debounce_ms"] = round(args.debounce * 1000)
    return dedupe


def child(text: str) -> dict[str, Any]:
    """An argparse type: `TASK` or `TASK:JSON`, a child run of TASK with that input. Only the
    first colon splits: the JSON may hold colons of its own."""
    task, colon, given = text.partition(":")
    if not task.strip():
        raise argparse.ArgumentTypeError("give TASK or TASK:JSON, e.g. demo.echo:'{\"n\": 1}'")
    return {"task": task, "input": json_value(given)} if colon else {"task": task}


def children_file(text: str) -> list[dict[str, Any]]:
    """An argparse type: a file (`-`: stdin) holding a JSON array of run bodies."""
    bodies = json_value(text if text == "-" else f"@{text}")
    if not isinstance(bodies, list) or not all(isinstance(body, dict) for body in bodies):
        raise argparse.ArgumentTypeError(
            'must hold a JSON array of run bodies, e.g. [{"task": "demo.echo", "input": 1}]'
        )
    return bodies


# --- a batch ------------------------------------------------------------------------------------


def _is_batch(args: argparse.Namespace) -> bool:
    """Whether to submit the runs of --batch; ConfigError (exit 2) unless exactly one of TASK and
    --batch is given, or for an option of one run given with --batch."""
    if args.batch is None:
        if args.task is None:
            raise ConfigError("give the TASK to submit, or --batch FILE.jsonl")
        return False
    if args.task is not None:
        raise ConfigError(
            f"give a TASK or --batch, not both (the lines of {args.batch} name theirs)"
        )
    given = [_flag(dest) for dest in RUN_OPTIONS if getattr(args, dest) is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot go with --batch: each line is a whole run body"
        )
    return True


def _flag(dest: str) -> str:
    return "--child/--children-file" if dest == "children" else "--" + dest.replace("_", "-")


def cmd_batch(args: argparse.Namespace, cli: Cli) -> int:
    """Sends the lines in requests of up to BATCH_MAX runs, each all or nothing, and prints the
    runs made: also those made before a request failed, so that no id is lost."""
    from runlane.client import BATCH_MAX

    lines = read_jsonl(args.batch)
    if args.key and len(lines) > BATCH_MAX:
        raise ConfigError(
            f"--key covers one batch of at most {BATCH_MAX} runs, and {_name(args.batch)} has "
            f"{len(lines)}: split it and give each part a key of its own"
        )
    made: list[dict[str, Any]] = []
    try:
        with Progress(len(lines), sys.stderr) as progress:
            for start in range(0, len(lines), BATCH_MAX):
                made += _send(cli, lines[start : start + BATCH_MAX], args.key)
                progress.show(len(made))
    finally:
        _show_made(args, cli, made, lines)
    return 0


def _send(
    cli: Cli, chunk: Sequence[tuple[int, dict[str, Any]]], key: str | None
) -> list[dict[str, Any]]:
    from runlane.client import ApiError

    try:
        return cli.client.submit_many([body for _, body in chunk], idempotency_key=key)
    except ApiError as exc:
        raise by_line(exc, [number for number, _ in chunk]) from None


def _show_made(
    args: argparse.Namespace,
    cli: Cli,
    made: list[dict[str, Any]],
    lines: Sequence[tuple[int, dict[str, Any]]],
) -> None:
    if not made:
        return
    ids = "\n".join(run["id"] for run in made)
    if args.quiet:
        print(ids, flush=True)
    else:
        cli.show({"items": made}, lambda: ids)
    if len(made) < len(lines):
        last = lines[len(made) - 1][0]
        hint(
            f"runlane: {len(made)} of {len(lines)} runs were made, up to line {last} (ids printed)"
        )


def read_jsonl(source: str) -> list[tuple[int, dict[str, Any]]]:
    """The run bodies of a JSONL file (`-`: stdin) with their line numbers, blank lines skipped.
    ConfigError (exit 2) naming the line of one that is no JSON object, before anything is sent."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
    bodies = []
    # Split as bytes: str.splitlines also splits at \f, \x1c or \u2028, which editors do not
    # count as lines, so the numbers said would be off.
    for number, line in enumerate(raw.removeprefix(codecs.BOM_UTF8).splitlines(), start=1):
        if line.strip():
            bodies.append((number, _body(line, f"{_name(source)} line {number}")))
    if not bodies:
        raise ConfigError(f"{_name(source)} holds no runs: give one JSON run body per line")
    return bodies


def _body(line: bytes, where: str) -> dict[str, Any]:
    try:
        body = json.loads(line.decode())
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(body, dict):
        example = '{"task": "demo.echo"}'
        raise ConfigError(
            f"{where}: a run body is a JSON object like {example}, not {output.compact(body, 40)}"
        )
    return body


def _name(source: str) -> str:
    return "stdin" if source == "-" else source


def by_line(exc: ApiError, numbers: Sequence[int]) -> ApiError:
    """A refused batch's problem with its items named by their lines: `runs[3].priority` is
    `line 7 priority` when the fourth run of the request came from line 7."""
    from runlane.client import ApiError

    def named(text: str) -> str:
        def line(match: re.Match[str]) -> str:
            index = int(match[1])
            if index >= len(numbers):  # not one of ours: left as the server said it
                return match[0]
            return f"line {numbers[index]}" + (" " if match[2] else "")

        return _ITEM.sub(line, text)

    problem = dict(exc.problem)
    if isinstance(problem.get("detail"), str):
        problem["detail"] = named(problem["detail"])
    if isinstance(problem.get("errors"), list):
        problem["errors"] = [
            {**error, "field": named(str(error.get("field", "")))}
            if isinstance(error, dict)
            else error
            for error in problem["errors"]
        ]
    return ApiError(exc.status, problem)


class Progress:
    """`[######......] 40.0% 2000/5000 runs sent` on a terminal, redrawn in place as requests
    are answered; nothing at all when the stream is no terminal (a log, a pipe)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out
        self.live = out.isatty()

    def show(self, sent: int) -> None:
        if self.live:
            message = f"{sent}/{self.total} runs sent"
            bar = output.progress_bar({"percent": 100 * sent / self.total, "message": message})
            self.out.write("\r\x1b[2K" + bar)
            self.out.flush()

    def __enter__(self) -> Progress:
        self.show(0)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live:  # also after an error or Ctrl-C: what follows must not land on the bar
            self.out.write("\n")
            self.out.flush()


# --- a flow's tree ------------------------------------------------------------------------------


def run_view(run: dict[str, Any], cli: Cli) -> str:
    """`runlane get`: the run, and below it a parent's children as a tree."""
    block = output.run_block(run, cli.now(), cli.style)
    counts = run.get("children")
    if not isinstance(counts, dict):  # no flow's parent
        return block
    rows = flow_rows(cli.client, run["id"])
    return f"{block}\n\nchildren: {counts_text(counts)}\n{tree(rows, cli.style)}"


def flow_rows(client: Client, run_id: str, depth: int = 0) -> list[tuple[int, dict[str, Any]]]:
    """The runs below a parent, each with its depth (0 for its children), in the order given,
    each child's own children right after it. One request per parent (flows nest 5 deep)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for run in client.children(run_id):
        rows.append((depth, run))
        if run.get("children") is not None:
            rows += flow_rows(client, run["id"], depth + 1)
    return rows


def counts_text(counts: dict[str, Any]) -> str:
    """`3 (2 succeeded, 1 pending)`: how many children, and the counts that are not 0."""
    states = ("succeeded", "failed", "cancelled", "pending")
    shown = ", ".join(f"{counts[state]} {state}" for state in states if counts.get(state))
    return f"{counts.get('total', 0)}" + (f" ({shown})" if shown else "")


def tree(rows: Sequence[tuple[int, dict[str, Any]]], style: output.Style) -> str:
    """A line per run: its id (indented by its depth), task and status."""
    cells = [["  " * depth + run["id"], run["task"], run["status"]] for depth, run in rows]
    return output.table(
        ["ID", "TASK", "STATUS"], cells, lambda col, text: style.status(text) if col == 2 else text
    )


# --- the options --------------------------------------------------------------------------------


def submit_options(submit: argparse.ArgumentParser) -> None:
    add = submit.add_argument
    add("task", metavar="TASK", nargs="?", help="a registered task name (see: runlane tasks)")
    add(
        "--input",
        type=json_value,
        metavar="JSON",
        help=f"the run's input: {INPUT_HELP} (default null)",
    )
    add("--queue", metavar="QUEUE", help="the queue (default: the task's, else default)")
    add("--priority", type=int, metavar="1..10", help="lower runs first (default 5)")
    when = submit.add_mutually_exclusive_group()
    delay_help = "start no sooner than this from now: 30s, 5m, 1500ms, or plain ms"
    when.add_argument(
        "--delay",
        "--delay-ms",
        dest="delay",
        type=duration("ms"),
        metavar="DURATION",
        help=delay_help,
    )
    time_help = "start no sooner than this RFC 3339 time, e.g. 2030-01-01T09:00:00Z"
    when.add_argument("--run-at", type=rfc3339, metavar="TIME", help=time_help)
    add("--max-attempts", type=int, metavar="N", help="attempts (default: the task's, else 1)")
    backoff_help = "wait before a retry: exponential:500ms, fixed:2s:0.2 (TYPE:DELAY[:JITTER])"
    add("--backoff", type=backoff, metavar="POLICY", help=backoff_help + ", or a JSON object")
    timeout_help = "an attempt running longer fails with Timeout: seconds, or 90s, 5m"
    add("--timeout", type=duration("s"), metavar="SECONDS", help=timeout_help)
    add("--metadata", type=json_object, metavar="JSON", help="a JSON object stored with the run")
    key_help = "Idempotency-Key: the same key and body again give the first run, never a second"
    add("--key", "--idempotency-key", dest="key", help=key_help)
    add(
        "--limit-key",
        metavar="KEY",
        help="what the queue's per-key limits count by, e.g. a customer",
    )
    dedupe_help = "while a run with this key is live, submitting it again gives that run"
    add("--dedupe-key", metavar="KEY", help=dedupe_help)
    mode = submit.add_mutually_exclusive_group()
    ttl_help = "the dedupe key holds this long after the first run, ended or not: 30s, 5m"
    mode.add_argument("--dedupe-ttl", type=duration("s"), metavar="DURATION", help=ttl_help)
    debounce_help = "delay the run this long; a submit before it starts replaces its input"
    mode.add_argument("--debounce", type=duration("ms"), metavar="DURATION", help=debounce_help)
    add("-q", "--quiet", action="store_true", help="print only the run's id")
    _flow_options(submit)


def _flow_options(submit: argparse.ArgumentParser) -> None:
    flow = submit.add_argument_group("a flow: the run waits until its children have ended")
    child_help = "a child: a run of TASK with input JSON (default null); repeat for more"
    flow.add_argument("--child", dest="children", action="append", type=child,
                      metavar="TASK[:JSON]", help=child_help)  # fmt: skip
    file_help = "children from a JSON array of run bodies in FILE (- for stdin)"
    flow.add_argument("--children-file", dest="children", action="extend", type=children_file,
                      metavar="FILE", help=file_help)  # fmt: skip
    failure_help = "fail (the default): the first failed child fails the run; ignore: it runs"
    flow.add_argument("--on-child-failure", choices=("fail", "ignore"), help=failure_help)
    batch = submit.add_argument_group("a batch: many runs at once, instead of TASK")
    batch_help = "the runs of a JSONL file, one run body per line (- for stdin); prints their ids"
    batch.add_argument("--batch", metavar="FILE.jsonl", help=batch_help)
