"""`runlane submit` of flows and batches, and `runlane get` of a flow's parent, against the Procfile
stack as a user runs them: the parent's result, the ids of a batch, the tree of a flow, and a
broken JSONL line or a refused run named by its line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.test_cli import UUID, failed, ok_json, ok_text, runlane, wait_finished
from tests.helpers import Stack

pytestmark = pytest.mark.e2e


def test_a_parent_of_two_child_options_succeeds_with_both_results(stack: Stack) -> None:
    parent = ok_json(
        runlane(stack, "submit", "demo.collect", "--child", 'demo.echo:{"n": 1}',
                "--child", 'demo.echo:{"n": 2}', "--json")
    )  # fmt: skip
    assert parent["status"] == "waiting" and parent["children"]["total"] == 2

    done = wait_finished(stack, parent["id"])

    assert done["status"] == "succeeded", done
    children = done["result"]["children"]
    assert [(c["task"], c["status"], c["result"]) for c in children] == [
        ("demo.echo", "succeeded", {"n": 1}),
        ("demo.echo", "succeeded", {"n": 2}),
    ]
    human = ok_text(runlane(stack, "submit", "demo.collect", "--child", "demo.noop"))
    assert re.match(rf"created run {UUID.pattern}: demo.collect on queue default, waiting", human)


def test_get_of_a_parent_shows_its_children_as_a_tree(stack: Stack, tmp_path: Path) -> None:
    children = tmp_path / "children.json"
    inner = {"task": "demo.collect", "children": [{"task": "demo.echo", "input": "leaf"}]}
    children.write_text(json.dumps([{"task": "demo.echo", "input": "first"}, inner]))
    parent_id = runlane(stack, "submit", "demo.collect", "--children-file", str(children),
                        "--child", "demo.fail", "--on-child-failure", "ignore", "-q")  # fmt: skip
    assert parent_id.returncode == 0, parent_id.stderr
    parent = wait_finished(stack, parent_id.stdout.strip())
    assert parent["status"] == "succeeded", parent

    block, tree = ok_text(runlane(stack, "get", parent["id"])).split("\n\n")

    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in block.splitlines())
    assert (shown["id"], shown["task"], shown["status"]) == (
        parent["id"],
        "demo.collect",
        "succeeded",
    )
    made = parent["result"]["children"]
    leaf = next(c for c in made if c["task"] == "demo.collect")["result"]["children"][0]
    lines = tree.splitlines()
    assert lines[0] == "children: 3 (2 succeeded, 1 failed)"
    assert [line.split() for line in lines[1:]] == [
        ["ID", "TASK", "STATUS"],
        [made[0]["id"], "demo.echo", "succeeded"],
        [made[1]["id"], "demo.collect", "succeeded"],
        [leaf["id"], "demo.echo", "succeeded"],  # indented: its parent is the one above
        [made[2]["id"], "demo.fail", "failed"],
    ]
    assert lines[4].startswith(f"  {leaf['id']}  ")
    assert ok_json(runlane(stack, "get", parent["id"], "--json"))["id"] == parent["id"]
    listed = ok_json(runlane(stack, "list", "--parent", parent["id"], "--json"))["items"]
    assert sorted(run["id"] for run in listed) == sorted(child["id"] for child in made)


def test_a_batch_of_a_jsonl_file_prints_the_ids_of_its_runs_in_order(
    stack: Stack, tmp_path: Path
) -> None:
    file = tmp_path / "runs.jsonl"
    file.write_text('{"task": "demo.echo", "input": 1}\n\n'
                    '{"task": "demo.echo", "input": 2, "priority": 1}\n'
                    '{"task": "demo.noop", "queue": "nobody-serves-this"}\n')  # fmt: skip

    ids = ok_text(runlane(stack, "submit", "--batch", str(file))).splitlines()

    assert len(ids) == 3 and all(UUID.fullmatch(run_id) for run_id in ids), ids
    runs = [ok_json(runlane(stack, "get", run_id, "--json")) for run_id in ids]
    assert [(r["task"], r["input"], r["priority"]) for r in runs] == [
        ("demo.echo", 1, 5), ("demo.echo", 2, 1), ("demo.noop", None, 5)
    ]  # fmt: skip
    assert runs[2]["queue"] == "nobody-serves-this"
    assert wait_finished(stack, ids[1])["result"] == 2
    again = runlane(stack, "submit", "--batch", "-", "--key", "cli-batch", "--json",
                    stdin=file.read_text())  # fmt: skip
    replayed = runlane(stack, "submit", "--batch", "-", "--key", "cli-batch", "-q",
                       stdin=file.read_text())  # fmt: skip
    items = ok_json(again)["items"]
    assert [run["task"] for run in items] == ["demo.echo", "demo.echo", "demo.noop"]
    assert ok_text(replayed).splitlines() == [run["id"] for run in items], "the key replays them"


def test_a_broken_line_or_a_refused_run_is_named_by_its_line_and_nothing_is_made(
    stack: Stack, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"task": "demo.echo"}\n{"task": "demo.echo", input: 1}\n{"task": "x"}\n')
    refused = tmp_path / "refused.jsonl"
    refused.write_text('{"task": "demo.echo"}\n\n{"task": "demo.echo", "priority": 0}\n')

    said = failed(runlane(stack, "submit", "--batch", str(broken)), 2)
    server_said = failed(runlane(stack, "submit", "--batch", str(refused)))

    assert f"{broken} line 2: not JSON" in said
    assert "422" in server_said and "\n  line 3 priority: " in server_said
    assert ok_json(runlane(stack, "list", "--json"))["items"] == [], "no run was made"
    both = failed(runlane(stack, "submit", "demo.echo", "--batch", str(refused)), 2)
    assert "give a TASK or --batch, not both" in both
