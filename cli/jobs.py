"""The job commands: `arkq submit`, `arkq watch`, `arkq result`, `arkq cancel`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from arkq.contract import Event, encode_event
from arkq.errors import InvalidRequest, JobFailed, JobLost, JobNotFound, QueueFull
from cli import exit_codes
from producer import Job, Producer


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser("submit", help="enqueue a prompt and stream the reply")
    submit.add_argument("prompt")
    submit.add_argument("--system", help="a system message before the prompt")
    submit.add_argument("--schema", type=Path, help="a JSON Schema file (bare, or in the json_schema shape)")
    submit.add_argument("--max-tokens", type=int)
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--model", help="model name to ask the server for")
    submit.add_argument("--job-id", help="your own job ID (idempotent: the same ID runs once)")
    submit.add_argument("--json", action="store_true", help="print every event as a JSON line")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the end")
    _add_redis_url(submit)
    submit.set_defaults(run=run_submit)

    watch = commands.add_parser("watch", help="stream a job's events from the start")
    watch.add_argument("job_id")
    watch.add_argument("--json", action="store_true", help="print every event as a JSON line")
    watch.add_argument("--timeout", type=float, help="seconds to wait for the end (default: no limit)")
    _add_redis_url(watch)
    watch.set_defaults(run=run_watch)

    result = commands.add_parser("result", help="print a job's stored result as JSON")
    result.add_argument("job_id")
    result.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the job to end")
    _add_redis_url(result)
    result.set_defaults(run=run_result)

    cancel = commands.add_parser("cancel", help="cancel a job: a queued one never runs, a running one stops")
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


async def run_submit(args: argparse.Namespace) -> int:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    try:
        json_schema = load_schema(args.schema) if args.schema else None
    except (OSError, ValueError) as error:
        print(f"arkq: --schema {args.schema}: {error}", file=sys.stderr)
        return exit_codes.USAGE
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
        except InvalidRequest as error:
            print(f"arkq: {error}", file=sys.stderr)
            return exit_codes.USAGE
        except QueueFull as error:
            print(f"arkq: {error}", file=sys.stderr)
            return exit_codes.QUEUE_FULL
        print(f"job {job.id}", file=sys.stderr)
        return await follow(job, as_json=args.json, out=sys.stdout, timeout=args.timeout)


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
            state = "unknown" if not await job.exists() else "not finished"
            print(f"arkq: job {args.job_id}: no result ({state})", file=sys.stderr)
            return exit_codes.NOT_FOUND
        print(result.model_dump_json(indent=2))
        return exit_codes.OK if result.ok else exit_codes.JOB_FAILED


async def run_cancel(args: argparse.Namespace) -> int:
    async with Producer(args.redis_url) as producer:
        outcome = await producer.job(args.job_id).cancel()
    messages = {
        "cancelled": "cancelled before it started: it will never run",
        "cancelling": "running: its worker stops it within a second",
        "ended": "it had ended already: nothing to cancel",
        "unknown": "no such job",
    }
    print(f"job {args.job_id}: {messages[outcome]}", file=sys.stderr)
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
        return exit_codes.OK
    if last is not None and last.type == "error":
        print(f"arkq: job {job.id} failed ({last.kind}): {last.message}", file=sys.stderr)
    elif last is not None:
        print(f"arkq: job {job.id} {last.type}", file=sys.stderr)
    return exit_codes.JOB_FAILED
