"""The README's production recipe, exactly as written: `runlane migrate`, then
`honcho start web worker relay scheduler webhooks` with REDIS_URL and DATABASE_URL set."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from app.config import Settings
from tests.conftest import auth, stack_env
from tests.helpers import BIN, ROOT, wait_for

pytestmark = pytest.mark.e2e


def readme_recipe() -> list[str]:
    """The shell lines of the README's "production recipe" block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- production recipe -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "the README has a production recipe block"
    lines = (line.strip() for line in block.group(1).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def web_answers(base: str, honcho: subprocess.Popen[bytes]) -> bool:
    assert honcho.poll() is None, f"honcho exited with {honcho.returncode}"
    try:
        return requests.get(f"{base}/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.timeout(120)
def test_the_readme_recipe_runs_the_stack_on_port(settings: Settings, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNLANE_")},
        **stack_env(settings),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
    }
    release, start = readme_recipe()
    assert start == "honcho start web worker relay scheduler webhooks"
    subprocess.run(release, shell=True, env=env, cwd=ROOT, check=True, timeout=60)
    log_path = tmp_path / "honcho.log"
    with open(log_path, "wb") as log:
        honcho = subprocess.Popen(
            start, shell=True, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{env['PORT']}"  # web on PORT itself, not PORT + 100
    try:
        wait_for(lambda: web_answers(base, honcho), 60, 0.2, "the web on PORT")
        created = requests.post(
            f"{base}/v1/runs", json={"task": "demo.echo", "input": {"via": "honcho"}},
            headers={**auth(), "Idempotency-Key": "recipe-1"}, timeout=10,
        )  # fmt: skip
        assert created.status_code == 201, created.text
        url = f"{base}/v1/runs/{created.json()['id']}"

        def succeeded() -> bool:
            return requests.get(url, headers=auth(), timeout=5).json()["status"] == "succeeded"

        wait_for(succeeded, 30, 0.1, "the run to succeed under honcho")
        assert honcho.poll() is None, "the stack is still up"
    except BaseException:
        print(log_path.read_text(errors="replace")[-10000:])
        raise
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(30)


def test_web_is_the_first_procfile_line() -> None:
    """honcho numbers ports by Procfile line (PORT, PORT + 100, ...): `honcho start web` or a
    runner that starts every line must give web PORT itself."""
    from tests.helpers import procfile

    assert next(iter(procfile())) == "web"
