"""The `arkq` exit codes table and the help text built from it, without running anything."""

from __future__ import annotations

import re
from pathlib import Path

from cli import exit_codes
from cli.help import bench_scenarios, epilog, fake_llm_directives
from cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _codes() -> dict[str, int]:
    return {
        name: value for name, value in vars(exit_codes).items() if name.isupper() and isinstance(value, int)
    }


def test_every_exit_code_has_a_meaning_and_no_two_share_a_number() -> None:
    codes = _codes()
    assert len(set(codes.values())) == len(codes), codes
    assert set(codes.values()) == set(exit_codes.MEANINGS)


def test_the_readme_table_lists_every_exit_code() -> None:
    listed = {int(code) for code in re.findall(r"^\| (\d+) \| ", README.read_text(), re.M)}
    assert listed == set(exit_codes.MEANINGS)


def test_epilog_lists_the_codes_asked_and_a_bug() -> None:
    text = epilog((exit_codes.OK, exit_codes.NOT_ENDED), "ARK_REDIS__URL")
    assert "  0  done" in text and " 13  " in text and " 70  a bug" in text and " 15  " not in text
    assert "ARK_CONFIG, ARK_REDIS__URL" in text


def test_defaults_are_shown_unless_none_or_a_flag() -> None:
    commands = next(action for action in build_parser()._actions if action.dest == "command")
    assert isinstance(commands.choices, dict)
    for name in ("fake-llm", "bench"):
        text = commands.choices[name].format_help()
        assert "(default: " in text
        assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: 30000)" in commands.choices["fake-llm"].format_help()


def test_the_help_sources_are_found() -> None:
    assert "stream_error=CODE" in fake_llm_directives()
    assert {"emulator", "pickup", "agent_call"} <= set(bench_scenarios())
