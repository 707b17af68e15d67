"""The official `openai` npm package, in Node, against `arkq serve`: a client nobody here wrote, in
another language, streaming and not."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import WorkerFleet, ark_env, start_gateway

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """tests/node with its packages installed (`npm ci`, as .ci/run does)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} is not installed: Node 20 and npm are needed for this test (CI installs them)"
            )
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "openai_client.mjs"


def test_the_openai_npm_package_streams_and_completes(
    node_client: Path, redis_url: str, fake_llm: str, fleet: WorkerFleet, log_dir: Path
) -> None:
    fleet.start(1)
    env = ark_env(redis_url, fake_llm, gateway__api_keys=json.dumps({"node": "sk-node"}))
    process, url = start_gateway(log_dir, env)
    try:
        ran = subprocess.run(
            ["node", str(node_client), f"{url}/v1", "sk-node", "tgi"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        process.stop()
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout)
    completion, stream = got["completion"], got["stream"]
    assert completion["id"] == f"chatcmpl-{completion['jobId']}"
    assert completion["content"] and completion["finishReason"] in {"stop", "length"}
    assert completion["usage"]["completion_tokens"] > 0
    # The same conversation, so the emulator's same answer, streamed.
    assert stream["content"] == completion["content"] and stream["finishReason"] == completion["finishReason"]
    assert len(stream["ids"]) == 1 and stream["ids"][0].startswith("chatcmpl-")
    assert stream["usage"]["completion_tokens"] == completion["usage"]["completion_tokens"]
    assert got["refused"] == {"status": 401, "code": "invalid_api_key", "isAuth": True}
