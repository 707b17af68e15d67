"""What `arkq submit`, `result` and `--help` tell a newcomer, run as a user runs them (issue 13).

Each test shows what used to go wrong (silence, a misleading exit code, a prompt ignored) and what the
command says and exits with now. Exit codes are `cli/exit_codes.py`'s.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS
from cli import exit_codes
from fake_llm import __doc__ as FAKE_LLM_DOC
from producer import JobCancelled, Producer
from tests.servers import BIN, WorkerFleet, ark_env
from tests.tcp_proxy import ProxyProcess
from tests.waiting import until

#: A job that streams for a long time (300 tokens, 100 ms apart): it is still running when looked at.
SLOW = "[[arkq:tokens=300 itl_ms=100]] take your time"


def arkq(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "arkq"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def started(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """`arkq submit ARGS` running, once it has printed its job's ID (Ctrl-C cancels the job from then on)."""
    process = subprocess.Popen(
        [str(BIN / "arkq"), "submit", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    assert first.startswith("job "), first + process.stderr.read()
    return process, first.split()[1]


def job_id_of(stderr: str) -> str:
    return stderr.split("job ", 1)[1].split()[0]


# --- item 4: a submit with no worker says so ----------------------------------------------------------


def test_submit_with_no_worker_says_no_worker_has_taken_it(redis_url: str, fake_llm: str) -> None:
    """Before: the job ID, then nothing until --timeout (10 minutes by default)."""
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", "anyone there?", "--timeout", "8")
    assert submitted.returncode == exit_codes.TIMEOUT
    lines = submitted.stderr.splitlines()
    notice = next(line for line in lines if "no worker has taken it" in line)
    assert "after 3 s" in notice and "no worker is alive" in notice and "arkq worker" in notice


def test_submit_says_how_many_workers_are_alive_when_all_are_busy(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.env["ARK_WORKER__MAX_JOBS"] = "1"
    fleet.start(1)
    env = ark_env(redis_url, fake_llm)
    blocker, blocker_id = started(env, SLOW)
    try:
        submitted = arkq(env, "submit", "behind the slow one", "--timeout", "8")
        assert submitted.returncode == exit_codes.TIMEOUT
        assert "no worker has taken it after 3 s; 1 worker is alive" in submitted.stderr
    finally:
        blocker.kill()
        blocker.wait()
        arkq(env, "cancel", blocker_id)


def test_a_job_taken_at_once_gets_no_notice(fleet: WorkerFleet, redis_url: str, fake_llm: str) -> None:
    fleet.start(1)
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", "[[arkq:tokens=40 itl_ms=100]] hi")
    assert submitted.returncode == 0, submitted.stderr
    assert "no worker" not in submitted.stderr


def test_submit_help_shows_the_timeout_default(redis_url: str, fake_llm: str) -> None:
    shown = arkq(ark_env(redis_url, fake_llm), "submit", "--help")
    assert shown.returncode == 0
    assert re.search(r"--timeout TIMEOUT\s+seconds to wait for the end \(default: 600.0\)", shown.stdout)


# --- item 5: Ctrl-C cancels the job it started --------------------------------------------------------


def test_ctrl_c_on_a_queued_job_cancels_it(redis_url: str, fake_llm: str) -> None:
    """Before: exit 130 without a word, and the job ran later all the same."""
    env = ark_env(redis_url, fake_llm)
    process, job_id = started(env, "nobody is working yet")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == exit_codes.INTERRUPTED
    assert f"job {job_id} cancelled before it started" in stderr
    result = arkq(env, "result", job_id)
    assert result.returncode == exit_codes.JOB_FAILED
    assert json.loads(result.stdout)["status"] == "cancelled"


async def test_ctrl_c_on_a_running_job_stops_its_generation(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    process, job_id = started(ark_env(redis_url, fake_llm), SLOW)
    async with Producer(redis_url) as producer:
        job = producer.job(job_id)

        async def running() -> bool:
            return (await job.state()).status == "running"

        await until(running, 30, "the job running")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == exit_codes.INTERRUPTED
        assert f"interrupted: cancelling job {job_id}" in stderr
        assert f"job {job_id} cancelled: its worker stops the generation" in stderr
        with pytest.raises(JobCancelled):
            await job.result(timeout=30)  # well before its 30 s of tokens


def test_a_second_ctrl_c_exits_at_once_while_cancelling(redis_url: str, fake_llm: str) -> None:
    """The cancel waits on Redis (gone silent here, behind a stalled proxy): a second Ctrl-C does not."""
    proxy = ProxyProcess(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        env = ark_env(proxy.url(), fake_llm, redis__connect_timeout_s="120")
        process, job_id = started(env, "the cancel will hang")
        assert process.stderr is not None
        proxy.stall()
        process.send_signal(signal.SIGINT)
        lines = [process.stderr.readline() for _ in range(2)]  # a blank line, then the cancelling one
        assert f"interrupted: cancelling job {job_id}" in lines[1], lines
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)  # far less than the cancel's 120 s
        assert process.returncode == exit_codes.INTERRUPTED
        assert f"interrupted again: exiting now; job {job_id} may still run" in stderr
    finally:
        proxy.stop()


def test_a_cancel_that_fails_says_the_job_may_still_run(redis_url: str, fake_llm: str) -> None:
    proxy = ProxyProcess(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        env = ark_env(proxy.url(), fake_llm, redis__connect_timeout_s="1")
        process, job_id = started(env, "Redis goes silent")
        proxy.stall()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == exit_codes.INTERRUPTED
        assert f"job {job_id} may still run: cancelling it failed" in stderr
        assert f"`arkq cancel {job_id}`" in stderr and "Traceback" not in stderr
    finally:
        proxy.stop()


async def test_ctrl_c_with_detach_leaves_the_job_running(redis_url: str, fake_llm: str) -> None:
    process, job_id = started(ark_env(redis_url, fake_llm), "leave it queued", "--detach")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == exit_codes.INTERRUPTED
    assert f"job {job_id} goes on (--detach)" in stderr and "cancelling" not in stderr
    async with Producer(redis_url) as producer:
        assert (await producer.job(job_id).state()).status == "queued"


# --- item 8: a job ID reused with another request -----------------------------------------------------


def test_a_job_id_reused_with_another_request_is_refused(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    """Before: the first job's answer, exit 0, and the new prompt silently ignored."""
    fleet.start(1)
    env = ark_env(redis_url, fake_llm)
    first = arkq(env, "submit", "--job-id", "myjob1", "the first prompt")
    assert first.returncode == 0, first.stderr

    other = arkq(env, "submit", "--job-id", "myjob1", "a different prompt")
    assert other.returncode == exit_codes.JOB_ID_IN_USE
    assert other.stdout == ""
    assert other.stderr.count("\n") == 1
    assert "'myjob1'" in other.stderr and "different request" in other.stderr

    same = arkq(env, "submit", "--job-id", "myjob1", "the first prompt")
    assert same.returncode == 0, same.stderr
    assert same.stdout == first.stdout


# --- item 9: `arkq result` on a job that has not ended ------------------------------------------------


def test_result_of_a_queued_job_is_not_no_such_job(redis_url: str, fake_llm: str) -> None:
    """Before: exit 3, "no such job", for a job that exists and is waiting."""
    env = ark_env(redis_url, fake_llm)
    submitted = arkq(env, "submit", "waiting", "--timeout", "0.5")
    job_id = job_id_of(submitted.stderr)
    result = arkq(env, "result", job_id)
    assert result.returncode == exit_codes.NOT_ENDED
    assert "no result yet: it is queued" in result.stderr
    unknown = arkq(env, "result", "no-such-job")
    assert unknown.returncode == exit_codes.NOT_FOUND


async def test_result_of_a_running_job_has_its_own_code(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    env = ark_env(redis_url, fake_llm)
    process, job_id = started(env, SLOW)
    try:
        async with Producer(redis_url) as producer:
            job = producer.job(job_id)

            async def running() -> bool:
                return (await job.state()).status == "running"

            await until(running, 30, "the job running")
        result = arkq(env, "result", job_id)
        assert result.returncode == exit_codes.NOT_ENDED
        assert "no result yet: it is running" in result.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


# --- item 10: empty prompts, stdin and files ----------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_an_empty_prompt_is_refused(redis_url: str, fake_llm: str, prompt: str) -> None:
    """Before: an empty prompt ran a job."""
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", prompt)
    assert submitted.returncode == exit_codes.USAGE
    assert submitted.stderr.count("\n") == 1 and "the prompt is empty" in submitted.stderr
    empty_stdin = arkq(ark_env(redis_url, fake_llm), "submit", "-", stdin=" \n")
    assert empty_stdin.returncode == exit_codes.USAGE and "(stdin)" in empty_stdin.stderr


def test_a_large_prompt_from_stdin_or_a_file(
    fleet: WorkerFleet, redis_url: str, fake_llm: str, tmp_path: Path
) -> None:
    """Before: a 200 KB prompt could not be passed at all (argument list too long)."""
    fleet.start(1)
    env = ark_env(redis_url, fake_llm)
    prompt = "lengthyword " * 20_000  # 240 KB, 20,000 of the emulator's tokens (its context: 32,768)
    from_stdin = arkq(env, "submit", "-", "--json", stdin=prompt)
    assert from_stdin.returncode == 0, from_stdin.stderr
    usage = json.loads(from_stdin.stdout.splitlines()[-1])["usage"]
    assert usage["prompt_tokens"] > 20_000

    (tmp_path / "prompt.txt").write_text(prompt)
    from_file = arkq(env, "submit", "--prompt-file", str(tmp_path / "prompt.txt"))
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == arkq(env, "submit", "-", stdin=prompt).stdout


def test_prompt_arguments_that_cannot_be_used(redis_url: str, fake_llm: str, tmp_path: Path) -> None:
    env = ark_env(redis_url, fake_llm)
    missing = arkq(env, "submit", "--prompt-file", str(tmp_path / "nothing.txt"))
    assert missing.returncode == exit_codes.USAGE and "nothing.txt" in missing.stderr
    (tmp_path / "p.txt").write_text("hi")
    both = arkq(env, "submit", "hi", "--prompt-file", str(tmp_path / "p.txt"))
    assert both.returncode == exit_codes.USAGE and "not both" in both.stderr
    none = arkq(env, "submit")
    assert none.returncode == exit_codes.USAGE and "no prompt" in none.stderr
    for run in (missing, both, none):
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


# --- item 11: an answer cut at max_tokens -------------------------------------------------------------


def test_an_answer_cut_at_max_tokens_says_so(fleet: WorkerFleet, redis_url: str, fake_llm: str) -> None:
    """Before: six words and exit 0, nothing said about the limit."""
    fleet.start(1)
    env = ark_env(redis_url, fake_llm)
    submitted = arkq(env, "submit", "Say hi", "--max-tokens", "6")
    assert submitted.returncode == exit_codes.ANSWER_CUT
    assert len(submitted.stdout.split()) == 6
    assert "cut at the token limit" in submitted.stderr
    job_id = job_id_of(submitted.stderr)
    result = arkq(env, "result", job_id)
    assert result.returncode == exit_codes.ANSWER_CUT
    assert json.loads(result.stdout)["finish_reason"] == "length"
    watched = arkq(env, "watch", job_id)
    assert watched.returncode == exit_codes.ANSWER_CUT and watched.stdout == submitted.stdout


# --- item 12: --help says defaults, exit codes and ARK_* variables ------------------------------------

COMMANDS = [
    *("submit", "watch", "result", "cancel", "worker"),
    *("serve", "check-llm", "fake-llm", "demo", "bench"),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_lists_exit_codes_and_environment(command: str) -> None:
    """Before: no defaults, no exit codes, no ARK_* variables in any `--help`."""
    shown = arkq({"PATH": "/usr/bin:/bin"}, command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "exit codes:" in shown.stdout
    assert "  0  done" in shown.stdout and " 70  a bug in arkq" in shown.stdout
    assert "environment" in shown.stdout
    if command not in {"fake-llm", "bench"}:
        assert "ARK_CONFIG" in shown.stdout and "ARK_" in shown.stdout
    every_default = re.findall(r"\(default: [^)]*\)", shown.stdout)
    assert every_default or command in {"cancel", "check-llm"} or "default" in shown.stdout


def test_help_shows_each_commands_own_defaults() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    assert "(default: 0.0)" in arkq(env, "result", "--help").stdout
    assert "(default: 30000)" in arkq(env, "fake-llm", "--help").stdout
    assert "(default: bench-results)" in arkq(env, "bench", "--help").stdout
    assert "(default: 30.0)" in arkq(env, "demo", "--help").stdout


def test_fake_llm_help_lists_its_directives() -> None:
    """Before: `fake-llm --help` did not mention the directives at all."""
    shown = arkq({"PATH": "/usr/bin:/bin"}, "fake-llm", "--help").stdout
    assert FAKE_LLM_DOC is not None
    directives = re.findall(r"^``(\w+=\w+)``", FAKE_LLM_DOC, re.M)
    assert len(directives) >= 10
    for directive in directives:
        assert f"``{directive}``" in shown
    assert '"[[arkq:" item' in shown


def test_bench_help_lists_its_scenarios() -> None:
    shown = arkq({"PATH": "/usr/bin:/bin"}, "bench", "--help").stdout
    for name in SCENARIOS:
        assert name in shown


async def test_worker_takes_redis_url_like_the_other_commands(redis_url: str, fake_llm: str) -> None:
    """Before: `arkq worker` had no --redis-url; now it overrides ARK_REDIS__URL as the others' does."""
    async with Producer(redis_url) as producer:
        job = await producer.enqueue([{"role": "user", "content": "over --redis-url"}])
        env = ark_env("redis://127.0.0.1:9/0", fake_llm)  # nothing listens there
        worker = arkq(env, "worker", "--burst", "--redis-url", redis_url)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        assert (await job.result(timeout=1)).text
