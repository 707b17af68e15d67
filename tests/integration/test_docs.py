"""Every Python example in the README runs as written, against a real Redis, worker and emulator, and
leaves nothing behind at exit: no warning, no traceback, also with `-W error::ResourceWarning`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import WorkerFleet, ark_env

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_the_readme_has_python_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("flags", [[], ["-W", "error::ResourceWarning"]], ids=["default", "resource-errors"])
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_a_readme_example_runs_clean(
    index: int, flags: list[str], fleet: WorkerFleet, redis_url: str, fake_llm: str, tmp_path: Path
) -> None:
    fleet.start(1)
    script = tmp_path / f"example_{index}.py"
    script.write_text(EXAMPLES[index])
    done = subprocess.run(
        [sys.executable, *flags, str(script)],
        env=ark_env(redis_url, fake_llm),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"example {index}:\n{EXAMPLES[index]}\n{done.stderr}"
    assert done.stderr == "", f"example {index} wrote to stderr:\n{done.stderr}"
    assert done.stdout.strip(), f"example {index} printed nothing"
