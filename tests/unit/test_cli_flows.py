"""`runlane submit` of flows and batches and the flow tree of `runlane get`, without a stack: the
option values, the usage errors (said before any request), the reading of a JSONL file, the
progress display, the tree, and a batch sent in requests to a local fake of the API."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError
from runlane.cli import flows, parser
from runlane.cli.commands import Cli
from runlane.cli.output import PLAIN, Style
from runlane.client import BATCH_MAX, ApiError
from tests.unit.cli import cli
from tests.unit.test_client import FlowApi, Seen


def stdin(monkeypatch: Any, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


# --- the options of a flow ----------------------------------------------------------------------


def test_a_child_is_a_task_and_the_json_after_the_first_colon_its_input() -> None:
    assert flows.child("demo.noop") == {"task": "demo.noop"}
    assert flows.child('demo.echo:{"n": 1}') == {"task": "demo.echo", "input": {"n": 1}}
    assert flows.child('demo.echo:"a:b"') == {"task": "demo.echo", "input": "a:b"}
    assert flows.child("demo.echo:null") == {"task": "demo.echo", "input": None}
    for bad, why in ((":1", "give TASK or TASK:JSON"), ("demo.echo:{nope", "not JSON"),
                     ("demo.echo:", "not JSON")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            flows.child(bad)


def test_children_come_in_the_order_given_from_child_and_children_file(tmp_path: Path) -> None:
    file = tmp_path / "children.json"
    file.write_text('[{"task": "demo.echo", "input": 2}, {"task": "demo.noop", "priority": 1}]')
    args = parser().parse_args(["submit", "demo.collect", "--child", "demo.echo:1",
                                "--children-file", str(file), "--child", "demo.fail",
                                "--on-child-failure", "ignore"])  # fmt: skip
    assert flows.run_fields(args) == {
        "children": [{"task": "demo.echo", "input": 1}, {"task": "demo.echo", "input": 2},
                     {"task": "demo.noop", "priority": 1}, {"task": "demo.fail"}],
        "on_child_failure": "ignore",
    }  # fmt: skip
    plain = parser().parse_args(["submit", "demo.echo", "--priority", "2"])
    assert flows.run_fields(plain) == {"priority": 2}, "no flow: no children sent"


def test_a_children_file_holds_an_array_of_run_bodies(tmp_path: Path, monkeypatch: Any) -> None:
    stdin(monkeypatch, b'[{"task": "demo.noop"}]')
    assert flows.children_file("-") == [{"task": "demo.noop"}]
    for content, why in (('{"task": "x"}', "JSON array of run bodies"),
                         ('["demo.noop"]', "JSON array"), ("[1,", "not JSON")):  # fmt: skip
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            flows.children_file(str(tmp_path / "bad.json"))
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read"):
        flows.children_file(str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [(("submit",), "give the TASK to submit, or --batch FILE.jsonl"),
     (("submit", "demo.echo", "--batch", "runs.jsonl"), "give a TASK or --batch, not both"),
     (("submit", "--batch", "runs.jsonl", "--queue", "q", "--delay", "1s"),
      "--queue, --delay cannot go with --batch"),
     (("submit", "--batch", "runs.jsonl", "--child", "demo.noop"),
      "--child/--children-file cannot go with --batch"),
     (("submit", "demo.collect", "--on-child-failure", "ignore"),
      "--on-child-failure needs --child or --children-file"),
     (("submit", "demo.collect", "--on-child-failure", "maybe"), "invalid choice: 'maybe'"),
     (("submit", "demo.collect", "--child", ":{}"), "argument --child: give TASK or TASK:JSON"),
     (("submit", "--batch", "missing.jsonl"), "cannot read missing.jsonl")],
)  # fmt: skip
def test_usage_errors_exit_2_before_any_request(
    capsys: Any, nowhere: str, args: tuple[str, ...], message: str
) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 2 and message in err and out == ""
    assert "cannot reach" not in err


def test_a_key_never_covers_a_batch_of_more_than_one_request(
    capsys: Any, nowhere: str, tmp_path: Path
) -> None:
    file = tmp_path / "runs.jsonl"
    file.write_text('{"task": "demo.noop"}\n' * (BATCH_MAX + 1))
    code, _, err = cli(capsys, "submit", "--batch", str(file), "--key", "k")
    assert code == 2 and f"--key covers one batch of at most {BATCH_MAX} runs" in err
    assert f"has {BATCH_MAX + 1}: split it" in err


# --- reading a JSONL file -----------------------------------------------------------------------


def test_read_jsonl_numbers_the_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    file = tmp_path / "runs.jsonl"
    # A BOM, CRLF line ends, blank lines, and a line separator inside a string: not a line end
    file.write_bytes(b'\xef\xbb\xbf{"task": "a"}\r\n\r\n  \n{"task": "b", "input": "\xe2\x80\xa8"}')
    b = {"task": "b", "input": "\u2028"}
    assert flows.read_jsonl(str(file)) == [(1, {"task": "a"}), (4, b)]


def test_read_jsonl_from_stdin(monkeypatch: Any) -> None:
    stdin(monkeypatch, b'{"task": "a"}\n{"task": "b"}')
    assert flows.read_jsonl("-") == [(1, {"task": "a"}), (2, {"task": "b"})]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b'{"task": "a"}\n{"task": "b",, }\n', "line 2: not JSON (Expecting property name enclosed "
                                            "in double quotes at column 14)"),
     (b'{"task": "a"}\n\n[1, 2]\n', 'line 3: a run body is a JSON object like {"task": '
                                    '"demo.echo"}, not [1, 2]'),
     (b'"demo.echo"\n', 'line 1: a run body is a JSON object like {"task": "demo.echo"}, '
                        'not "demo.echo"'),
     (b'{"task": "a"}\n{"task": "\xff"}\n', "line 2: not UTF-8 text"),
     (b"\n  \n", "holds no runs: give one JSON run body per line")],
)  # fmt: skip
def test_read_jsonl_names_the_line_that_is_no_run_body(
    tmp_path: Path, content: bytes, message: str
) -> None:
    file = tmp_path / "runs.jsonl"
    file.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        flows.read_jsonl(str(file))
    assert str(raised.value) == f"{file} {message}"


def test_a_refused_batch_names_its_runs_by_their_lines() -> None:
    refused = ApiError(422, {"title": "Unprocessable Entity", "detail":
                             "invalid fields: runs[0].priority, runs[2], runs[9].task, runs",
                             "errors": [{"field": "runs[0].priority", "message": "at least 1"},
                                        {"field": "runs[2]", "message": "too deep"},
                                        {"field": "runs[1].children[3].task", "message": "?"},
                                        "not a field"]})  # fmt: skip
    named = flows.by_line(refused, [3, 7, 8])
    assert named.status == 422
    assert str(named) == (
        "422 Unprocessable Entity: invalid fields: line 3 priority, line 8, runs[9].task, runs"
    )
    assert named.fields == [("line 3 priority", "at least 1"), ("line 8", "too deep"),
                            ("line 7 children[3].task", "?")]  # fmt: skip


# --- the progress display -----------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal_and_ends_it() -> None:
    out = Terminal()
    with pytest.raises(KeyboardInterrupt), flows.Progress(2500, out) as progress:
        progress.show(1000)
        raise KeyboardInterrupt
    drawn = out.getvalue()
    assert drawn.count("\r\x1b[2K") == 2 and drawn.endswith("40.0% 1000/2500 runs sent\n")
    assert "  0.0% 0/2500 runs sent" in drawn
    quiet = io.StringIO()
    with flows.Progress(10, quiet) as progress:
        progress.show(10)
    assert quiet.getvalue() == "", "no terminal: nothing drawn"


# --- the tree of a flow -------------------------------------------------------------------------


def child_run(run_id: str, status: str = "succeeded", task: str = "demo.echo",
              children: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"id": run_id, "task": task, "status": status, "children": children}


class FakeClient:
    """children() as the client answers it: in the order given; it records who was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.flow = {
            "p": [child_run("a"), child_run("bb", "waiting", "demo.collect", {"total": 2}),
                  child_run("c", "failed")],
            "bb": [child_run("b1", "queued"), child_run("b2", "running", "demo.collect", {})],
            "b2": [child_run("b2x", "queued", "demo.noop")],
        }  # fmt: skip

    def children(self, run_id: str) -> list[dict[str, Any]]:
        self.asked.append(run_id)
        return self.flow[run_id]


def test_flow_rows_walk_the_tree_depth_first_in_the_order_given() -> None:
    client = FakeClient()
    rows = flows.flow_rows(client, "p")  # type: ignore[arg-type]
    assert [(depth, run["id"]) for depth, run in rows] == [
        (0, "a"), (0, "bb"), (1, "b1"), (1, "b2"), (2, "b2x"), (0, "c")
    ]  # fmt: skip
    assert client.asked == ["p", "bb", "b2"], "one request per parent, none for a leaf"
    assert flows.tree(rows, PLAIN).splitlines() == [
        "ID       TASK          STATUS",
        "a        demo.echo     succeeded",
        "bb       demo.collect  waiting",
        "  b1     demo.echo     queued",
        "  b2     demo.collect  running",
        "    b2x  demo.noop     queued",
        "c        demo.echo     failed",
    ]
    coloured = flows.tree(rows[:1], Style(True)).splitlines()[1]
    assert coloured == "a   demo.echo  \x1b[32msucceeded\x1b[0m"


def test_get_shows_a_parents_children_below_the_run_and_nothing_more_for_other_runs() -> None:
    client = FakeClient()
    view = Cli(client, json=False, style=PLAIN)  # type: ignore[arg-type]
    parent = {"id": "p", "task": "demo.collect", "status": "waiting", "queue": "default",
              "priority": 5, "attempt": 0, "max_attempts": 1, "input": None, "metadata": {},
              "children": {"total": 3, "succeeded": 1, "failed": 1, "cancelled": 0,
                           "pending": 1}}  # fmt: skip
    text = flows.run_view(parent, view)
    block, children = text.split("\n\n")
    assert block.splitlines()[:2] == ["id       p", "task     demo.collect"]
    assert children.splitlines()[:3] == [
        "children: 3 (1 succeeded, 1 failed, 1 pending)",
        "ID       TASK          STATUS",
        "a        demo.echo     succeeded",
    ]
    alone = {**parent, "children": None}
    assert flows.run_view(alone, view) == block and client.asked == ["p", "bb", "b2"]
    assert flows.counts_text({"total": 2, "succeeded": 0, "pending": 0}) == "2"


# --- a batch against a fake API -----------------------------------------------------------------


@pytest.fixture
def fake_api(monkeypatch: Any) -> Iterator[Seen]:
    """A FlowApi of this test's own in the environment, and the requests it saw."""
    seen: Seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Recording", (FlowApi,), {"seen": seen}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("RUNLANE_URL", f"http://127.0.0.1:{httpd.server_port}")
    monkeypatch.setenv("RUNLANE_TOKEN", "tok")
    yield seen
    httpd.shutdown()
    httpd.server_close()


def jsonl(tmp_path: Path, count: int, bad: int | None = None) -> str:
    """`count` runs, one a line with a blank line after the first; the run `bad` refused."""
    runs = [{"task": "demo.echo", "input": i} for i in range(count)]
    if bad is not None:
        runs[bad]["priority"] = 0
    lines = [json.dumps(run) for run in runs]
    file = tmp_path / "runs.jsonl"
    file.write_text("\n".join(lines[:1] + [""] + lines[1:]) + "\n")
    return str(file)


def test_a_batch_is_sent_in_requests_of_up_to_a_batch_and_prints_every_id(
    capsys: Any, fake_api: Seen, tmp_path: Path
) -> None:
    code, out, err = cli(capsys, "submit", "--batch", jsonl(tmp_path, BATCH_MAX + 2))
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"r{i}" for i in range(BATCH_MAX + 2)]
    assert [len(body["runs"]) for _, _, _, body in fake_api] == [BATCH_MAX, 2]
    assert fake_api[0][3]["runs"][:2] == [{"task": "demo.echo", "input": 0},
                                          {"task": "demo.echo", "input": 1}]  # fmt: skip

    code, out, _ = cli(capsys, "submit", "--batch", jsonl(tmp_path, 2), "--key", "b1", "--json")
    assert code == 0 and fake_api[-1][2]["Idempotency-Key"] == "b1"
    assert [run["id"] for run in json.loads(out)["items"]] == ["r0", "r1"]


def test_a_refused_request_names_the_lines_and_the_runs_made_before_it_are_printed(
    capsys: Any, fake_api: Seen, tmp_path: Path
) -> None:
    code, out, err = cli(capsys, "submit", "--batch", jsonl(tmp_path, BATCH_MAX + 5, BATCH_MAX + 2))
    assert code == 1
    assert out.splitlines() == [f"r{i}" for i in range(BATCH_MAX)], "the first request's runs"
    bad_line = BATCH_MAX + 2 + 2  # 1-based, and the blank line after the first run
    assert f"\n  line {bad_line} priority: at least 1" in err
    assert f"{BATCH_MAX} of {BATCH_MAX + 5} runs were made, up to line {BATCH_MAX + 1}" in err

    code, out, err = cli(capsys, "submit", "--batch", jsonl(tmp_path, 3, 0))
    assert (code, out) == (1, "") and "line 1 priority: at least 1" in err
    assert "runs were made" not in err, "nothing made: nothing to say about it"
