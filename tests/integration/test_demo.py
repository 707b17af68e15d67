"""`arkq demo` says what it asked and where the answer comes from: a newcomer who sees lorem-ipsum words
must not take them for a broken model."""

from __future__ import annotations

import subprocess

from tests.servers import BIN


def test_the_demo_shows_its_question_and_says_the_answer_is_the_emulators() -> None:
    ran = subprocess.run(
        [str(BIN / "arkq"), "demo", "What is a queue?", "--itl-ms", "0"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    head = ran.stdout.split("[started", 1)[0]
    assert "'What is a queue?'" in head
    assert "SGLang emulator" in head and "llm.base_url" in head
