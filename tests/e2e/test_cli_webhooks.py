"""`runlane webhooks` against the Procfile's web and webhooks processes: create (the secret shown
once), list, test (a ping the receiver verifies), deliveries, delete, and the errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.test_cli import failed, ok_json, ok_text, runlane
from tests.e2e.test_webhooks import FAST_RETRIES
from tests.helpers import Stack, wait_for
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    stack = stack_factory(**FAST_RETRIES)
    stack.run_release()
    stack.start("web")
    stack.start("webhooks")
    stack.wait_ready()
    return stack


def test_webhooks_commands(stack: Stack) -> None:
    with receiver() as hook:
        shown = ok_text(runlane(stack, "webhooks", "create", hook.url, "--events",
                                "run.succeeded,run.failed", "--queue", "emails"))  # fmt: skip
        assert "secret  whsec_" in shown and "run.succeeded, run.failed" in shown
        made = ok_json(runlane(stack, "webhooks", "create", hook.url, "--json"))
        assert made["events"] == ["*"] and made["secret"].startswith("whsec_")
        hook.secret = made["secret"]
        listed = ok_json(runlane(stack, "webhooks", "list", "--json"))["items"]
        assert len(listed) == 2 and all("secret" not in e for e in listed)
        table = ok_text(runlane(stack, "webhooks", "list"))
        assert made["id"] in table and "whsec_" not in table and "emails" in table

        assert "queued a webhook.ping" in ok_text(runlane(stack, "webhooks", "test", made["id"]))
        ping = wait_for(lambda: list(hook.unique().values()), 30, message="the ping")[0]
        assert ping.body["type"] == "webhook.ping" and hook.bad_signatures == 0

        def answered() -> list[dict]:
            found = runlane(stack, "webhooks", "deliveries", made["id"], "--limit", "5", "--json")
            return [a for a in ok_json(found)["items"] if a["status_code"] == 200]

        attempt = wait_for(answered, 30, message="the ping's attempt")[0]
        assert attempt["webhook_id"] == ping.webhook_id and attempt["attempt"] == 1
        human = ok_text(runlane(stack, "webhooks", "deliveries", made["id"]))
        assert "webhook.ping" in human and "200" in human

        assert "deleted" in ok_text(runlane(stack, "webhooks", "delete", made["id"]))
        assert "no such webhook endpoint" in failed(
            runlane(stack, "webhooks", "delete", made["id"])
        )
        assert "url" in failed(runlane(stack, "webhooks", "create", "ftp://example.com/"))
        assert "run.nope" in failed(runlane(stack, "webhooks", "create", hook.url, "--events",
                                            "run.nope"))  # fmt: skip
        failed(runlane(stack, "webhooks", "deliveries", made["id"], "--limit", "0"), 2)
        failed(runlane(stack, "webhooks", "create", hook.url, "--events", ","), 2)
