"""An application's own `worker.py` or `producer.py` does not shadow arkq's packages for the `arkq`
command, which is what the README recommends: `arq worker.WorkerSettings` run in such a directory
imports the application's `worker` instead (arq adds the working directory to the import path, where
it is found before an editable install of arkq)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.servers import BIN, ark_env


def test_arkq_runs_in_a_directory_with_its_own_worker_and_producer_modules(
    tmp_path: Path, redis_url: str, fake_llm: str
) -> None:
    for name in ("worker", "producer"):
        (tmp_path / f"{name}.py").write_text(f'raise ImportError("the application\'s own {name}.py")\n')
    env = ark_env(redis_url, fake_llm)

    def arkq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "arkq"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    submitted = arkq("submit", "hello", "--timeout", "1")  # no worker yet: it stays queued
    found = re.search(r"job ([0-9a-f]{32})", submitted.stderr + submitted.stdout)
    assert found is not None and "application's own" not in submitted.stderr, submitted.stderr
    worked = arkq("worker", "--burst")  # runs the queued job, then stops
    assert worked.returncode == 0 and "application's own" not in worked.stderr, worked.stderr
    result = arkq("result", found.group(1))
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    shadowed = subprocess.run(
        [str(BIN / "arq"), "worker.WorkerSettings", "--burst"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shadowed.returncode != 0 and "application's own worker.py" in shadowed.stderr
