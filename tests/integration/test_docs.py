"""Every Python example in the README runs as written, against a real Redis, worker and emulator (and
a gateway, for the examples that call one), and leaves nothing behind at exit: no warning, no
traceback, also with `-W error::ResourceWarning`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import WorkerFleet, ark_env, start_gateway

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
#: Where the README's examples find the gateway, and the key they use.
README_GATEWAY = "http://localhost:8080"
README_KEY = "sk-alice"


def test_the_readme_has_python_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("flags", [[], ["-W", "error::ResourceWarning"]], ids=["default", "resource-errors"])
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_a_readme_example_runs_clean(
    index: int, flags: list[str], fleet: WorkerFleet, redis_url: str, fake_llm: str, tmp_path: Path
) -> None:
    fleet.start(1)
    example = EXAMPLES[index]
    gateway = None
    if README_GATEWAY in example:  # the README's gateway, with the key its examples use
        keys = f'{{"alice": "{README_KEY}"}}'
        gateway, url = start_gateway(tmp_path, ark_env(redis_url, fake_llm, gateway__api_keys=keys))
        example = example.replace(README_GATEWAY, url)
    script = tmp_path / f"example_{index}.py"
    script.write_text(example)
    try:
        done = subprocess.run(
            [sys.executable, *flags, str(script)],
            env=ark_env(redis_url, fake_llm),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        if gateway is not None:
            gateway.stop()
    assert done.returncode == 0, f"example {index}:\n{EXAMPLES[index]}\n{done.stderr}"
    assert done.stderr == "", f"example {index} wrote to stderr:\n{done.stderr}"
    assert done.stdout.strip(), f"example {index} printed nothing"
