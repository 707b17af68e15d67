"""The job commands: `arkq submit`, `arkq watch`, `arkq result`, `arkq cancel`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from redis.exceptions import RedisError

from arkq.contract import Event, encode_event
from arkq.errors import ArkqError, InvalidRequest, JobFailed, JobIdInUse, JobLost, JobNotFound, QueueFull
from arkq.keys import wake_channel
from cli import exit_codes
from cli.help import JOBS_ENV, Formatter, epilog
from producer import Job, Producer

#: What a cancel did, by `Job.cancel()`'s outcome: for `arkq cancel`, and for Ctrl-C in `arkq submit`.
CANCEL_OUTCOMES = {
    "cancelled": "cancelled before it started: it will never run",
    "cancelling": "cancelled: its worker stops the generation",
    "ended": "not cancelled: it had ended already",
    "unknown": "not cancelled: Redis does not know it (no such job, or it expired)",
}

#: How long `arkq submit` waits for a worker to take its job before it says that none has.
QUEUED_NOTICE_S = 3.0

_REDIS = exit_codes.REDIS_FAILURES
SUBMIT_CODES = (
    exit_codes.OK,
    exit_codes.JOB_FAILED,
    exit_codes.USAGE,
    exit_codes.NOT_FOUND,
    exit_codes.TIMEOUT,
    *_REDIS,
    exit_codes.QUEUE_FULL,
    exit_codes.JOB_ID_IN_USE,
    exit_codes.ANSWER_CUT,
    exit_codes.INTERRUPTED,
)
WATCH_CODES = (
    exit_codes.OK,
    exit_codes.JOB_FAILED,
    exit_codes.USAGE,
    exit_codes.NOT_FOUND,
    exit_codes.TIMEOUT,
    *_REDIS,
    exit_codes.ANSWER_CUT,
    exit_codes.INTERRUPTED,
)
RESULT_CODES = (
    exit_codes.OK,
    exit_codes.JOB_FAILED,
    exit_codes.USAGE,
    exit_codes.NOT_FOUND,
    *_REDIS,
    exit_codes.NOT_ENDED,
    exit_codes.ANSWER_CUT,
)
CANCEL_CODES = (exit_codes.OK, exit_codes.USAGE, exit_codes.NOT_FOUND, *_REDIS)

SUBMIT_NOTES = f"""\
The prompt comes from the argument, from stdin (`arkq submit -`) or from a file (--prompt-file); an
empty one is refused. The job ID goes to stderr, the answer to stdout as it streams. If no worker has
taken the job after {QUEUED_NOTICE_S:g} s, stderr says so and how many workers are alive.
Ctrl-C cancels the job (a second Ctrl-C exits at once); with --detach it exits and the job goes on."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser(
        "submit",
        help="enqueue a prompt and stream the reply",
        formatter_class=Formatter,
        epilog=epilog(SUBMIT_CODES, JOBS_ENV, before=SUBMIT_NOTES),
    )
    submit.add_argument("prompt", nargs="?", help="the prompt; `-` reads it from stdin")
    submit.add_argument("--prompt-file", type=Path, metavar="PATH", help="read the prompt from this file")
    submit.add_argument("--system", help="a system message before the prompt")
    submit.add_argument("--schema", type=Path, help="a JSON Schema file (bare, or in the json_schema shape)")
    submit.add_argument("--max-tokens", type=int, help="the answer's token limit (default: llm.max_tokens)")
    submit.add_argument("--temperature", type=float, help="sampling temperature (default: llm.temperature)")
    submit.add_argument("--model", help="model name to ask the server for (default: llm.model_name)")
    submit.add_argument(
        "--job-id",
        help="your own job ID (idempotent: the same ID with the same request runs once; "
        "with another request it is refused)",
    )
    submit.add_argument("--json", action="store_true", help="print every event as a JSON line")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the end")
    submit.add_argument(
        "--detach", action="store_true", help="on Ctrl-C, exit and leave the job running (no cancel)"
    )
    _add_redis_url(submit)
    submit.set_defaults(run=run_submit)

    watch = commands.add_parser(
        "watch",
        help="stream a job's events from the start",
        formatter_class=Formatter,
        epilog=epilog(WATCH_CODES, JOBS_ENV),
    )
    watch.add_argument("job_id")
    watch.add_argument("--json", action="store_true", help="print every event as a JSON line")
    watch.add_argument("--timeout", type=float, help="seconds to wait for the end (default: no limit)")
    _add_redis_url(watch)
    watch.set_defaults(run=run_watch)

    result = commands.add_parser(
        "result",
        help="print a job's stored result as JSON",
        formatter_class=Formatter,
        epilog=epilog(RESULT_CODES, JOBS_ENV),
    )
    result.add_argument("job_id")
    result.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the job to end")
    _add_redis_url(result)
    result.set_defaults(run=run_result)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a job: a queued one never runs, a running one stops",
        formatter_class=Formatter,
        epilog=epilog(CANCEL_CODES, JOBS_ENV),
    )
    cancel.add_argument("job_id")
    _add_redis_url(cancel)
    cancel.set_defaults(run=run_cancel)


def _add_redis_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: redis.url from the configuration)")


def load_schema(path: Path) -> dict[str, Any]:
    """The `response_format` for a schema file; a bare JSON Schema is wrapped, named after the file."""
    schema = json.loads(path.read_text())
    if isinstance(schema, dict) and schema.get("type") == "json_schema":
        return schema
    return {"type": "json_schema", "json_schema": {"name": path.stem, "schema": schema}}


class BadArgument(ArkqError):
    """An argument that cannot be used: the message says which and why (exit 2)."""


def read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    """The prompt from the argument, stdin (`-`) or `--prompt-file`; BadArgument if none, both, or
    one with nothing in it but white space."""
    if prompt is not None and prompt_file is not None:
        raise BadArgument("give the prompt as an argument or with --prompt-file, not both")
    if prompt_file is not None:
        try:
            prompt = prompt_file.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise BadArgument(f"--prompt-file {prompt_file}: {error}") from None
        source = f"--prompt-file {prompt_file}"
    elif prompt == "-":
        try:
            prompt, source = sys.stdin.read(), "stdin"
        except (OSError, UnicodeDecodeError) as error:
            raise BadArgument(f"cannot read the prompt from stdin: {error}") from None
    elif prompt is None:
        raise BadArgument("no prompt: give it as an argument, `-` for stdin, or --prompt-file PATH")
    else:
        source = "the prompt argument"
    if not prompt.strip():
        raise BadArgument(f"the prompt is empty ({source}): there is nothing to ask")
    return prompt


async def run_submit(args: argparse.Namespace) -> int:
    try:
        prompt = read_prompt(args.prompt, args.prompt_file)
        json_schema = _schema(args.schema)
    except BadArgument as error:
        print(f"arkq: {error}", file=sys.stderr)
        return exit_codes.USAGE
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    async with Producer(args.redis_url) as producer:
        try:
            job = await producer.enqueue(
                messages,
                json_schema=json_schema,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                job_id=args.job_id,
                model=args.model,
            )
        except JobIdInUse as error:
            print(f"arkq: {error}", file=sys.stderr)
            return exit_codes.JOB_ID_IN_USE
        except InvalidRequest as error:
            print(f"arkq: {error}", file=sys.stderr)
            return exit_codes.USAGE
        except QueueFull as error:
            print(f"arkq: {error}", file=sys.stderr)
            return exit_codes.QUEUE_FULL
        notice = asyncio.create_task(_say_if_unclaimed(producer, job, after_s=QUEUED_NOTICE_S))
        try:
            return await _follow_until_interrupted(job, args)
        finally:
            notice.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notice


def _schema(path: Path | None) -> dict[str, Any] | None:
    try:
        return load_schema(path) if path else None
    except (OSError, ValueError) as error:
        raise BadArgument(f"--schema {path}: {error}") from None


async def live_workers(producer: Producer) -> int:
    """How many workers serve the producer's queue now: each listens on the queue's wake-up channel
    (`worker.wakeup`) while it runs, and a dead one's subscription ends with its connection."""
    channel = wake_channel(producer.config.queue.name)
    counts = await producer.redis.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0


async def _say_if_unclaimed(producer: Producer, job: Job, *, after_s: float) -> None:
    """After `after_s`, if the job is still queued, say on stderr that no worker has taken it, and how
    many are alive. A failure to ask is no reason to stop the submit: it is let go."""
    await asyncio.sleep(after_s)
    try:
        if (await job.state()).status != "queued":
            return
        alive = await live_workers(producer)
    except (ArkqError, RedisError, OSError):
        return
    if alive == 0:
        why = "no worker is alive on this queue: start one (`arkq worker`)"
    else:
        why = f"{alive} worker{'s are' if alive > 1 else ' is'} alive: the job waits for a free slot"
    print(
        f"arkq: job {job.id}: no worker has taken it after {after_s:g} s; {why} "
        f"(queue {producer.config.queue.name!r})",
        file=sys.stderr,
        flush=True,
    )


async def _follow_until_interrupted(job: Job, args: argparse.Namespace) -> int:
    """Follow the job; a Ctrl-C cancels it (or, with --detach, leaves it running), a second Ctrl-C
    while cancelling exits at once."""
    loop = asyncio.get_running_loop()
    following = asyncio.create_task(follow(job, as_json=args.json, out=sys.stdout, timeout=args.timeout))
    stop = asyncio.Event()

    def interrupted() -> None:
        if not stop.is_set():
            stop.set()
            return
        print(
            f"arkq: interrupted again: exiting now; job {job.id} may still run (`arkq cancel {job.id}`)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(exit_codes.INTERRUPTED)

    loop.add_signal_handler(signal.SIGINT, interrupted)
    # Said once Ctrl-C cancels the job: whoever reads the ID can count on that.
    print(f"job {job.id}", file=sys.stderr, flush=True)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            return following.result()
        await _stop(following)
        if args.detach:
            print(
                f"\narkq: interrupted: job {job.id} goes on (--detach): `arkq watch {job.id}` follows it, "
                f"`arkq cancel {job.id}` stops it",
                file=sys.stderr,
            )
            return exit_codes.INTERRUPTED
        print(
            f"\narkq: interrupted: cancelling job {job.id} (Ctrl-C again to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        try:
            outcome = await job.cancel()
        except (ArkqError, RedisError, OSError) as error:
            print(
                f"arkq: job {job.id} may still run: cancelling it failed ({error}); `arkq cancel {job.id}`",
                file=sys.stderr,
            )
            return exit_codes.INTERRUPTED
        print(f"arkq: job {job.id} {CANCEL_OUTCOMES[outcome]}", file=sys.stderr)
        return exit_codes.INTERRUPTED
    finally:
        stopping.cancel()
        loop.remove_signal_handler(signal.SIGINT)


async def _stop(task: asyncio.Task[int]) -> None:
    """Cancel `task` until it ends: a cancel that lands inside the Redis client's own timeout handling
    can be lost (asyncio.wait_for on Python 3.11), and the task would go on (see `Hub.aclose`)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


async def run_watch(args: argparse.Namespace) -> int:
    async with Producer(args.redis_url) as producer:
        return await follow(
            producer.job(args.job_id), as_json=args.json, out=sys.stdout, timeout=args.timeout
        )


async def run_result(args: argparse.Namespace) -> int:
    async with Producer(args.redis_url) as producer:
        job = producer.job(args.job_id)
        result = await job.fetch_result()
        if result is None and args.wait > 0:
            # However it ends, the stored result below says how.
            with contextlib.suppress(JobFailed, JobNotFound, JobLost, TimeoutError):
                await job.result(timeout=args.wait)
            result = await job.fetch_result()
        if result is None:
            state = await job.state()
            if state.status in {"queued", "running"}:
                print(
                    f"arkq: job {args.job_id}: no result yet: it is {state.status} "
                    f"(`arkq result --wait SECONDS {args.job_id}` waits for it)",
                    file=sys.stderr,
                )
                return exit_codes.NOT_ENDED
            print(f"arkq: job {args.job_id}: no result (no such job, or it expired)", file=sys.stderr)
            return exit_codes.NOT_FOUND
        print(result.model_dump_json(indent=2))
        if result.ok and result.finish_reason == "length":
            print(_cut_notice(args.job_id), file=sys.stderr)
            return exit_codes.ANSWER_CUT
        return exit_codes.OK if result.ok else exit_codes.JOB_FAILED


async def run_cancel(args: argparse.Namespace) -> int:
    async with Producer(args.redis_url) as producer:
        outcome = await producer.job(args.job_id).cancel()
    print(f"job {args.job_id} {CANCEL_OUTCOMES[outcome]}", file=sys.stderr)
    return exit_codes.NOT_FOUND if outcome == "unknown" else exit_codes.OK


async def follow(job: Job, *, as_json: bool, out: TextIO, timeout: float | None = None) -> int:
    """Print a job's stream until it ends; the exit code says how it ended."""
    last: Event | None = None
    try:
        async with asyncio.timeout(timeout):
            async for event in job.events():
                last = event
                if as_json:
                    out.write(encode_event(event).decode() + "\n")
                elif event.type == "token":
                    out.write(event.text)
                elif event.type == "reset":
                    out.write("\n[reset: the job started over]\n")
                out.flush()
    except (JobNotFound, JobLost) as error:
        print(f"arkq: {error}", file=sys.stderr)
        return exit_codes.NOT_FOUND
    except TimeoutError:
        print(
            f"\narkq: job {job.id} has not ended after {timeout} s; follow it with `arkq watch {job.id}`",
            file=sys.stderr,
        )
        return exit_codes.TIMEOUT
    if not as_json:
        out.write("\n")
    if last is not None and last.type == "done":
        if last.finish_reason == "length":
            print(_cut_notice(job.id), file=sys.stderr)
            return exit_codes.ANSWER_CUT
        return exit_codes.OK
    if last is not None and last.type == "error":
        print(f"arkq: job {job.id} failed ({last.kind}): {last.message}", file=sys.stderr)
    elif last is not None:
        print(f"arkq: job {job.id} {last.type}", file=sys.stderr)
    return exit_codes.JOB_FAILED


def _cut_notice(job_id: str) -> str:
    return (
        f"arkq: job {job_id}: the answer was cut at the token limit (finish_reason length): "
        "raise --max-tokens for a longer one"
    )
