"""`arkq status`: the queue and its workers on one screen, from Redis alone (`arkq.status`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time

from arkq.errors import RedisFailure
from arkq.status import FleetStatus, WorkerRecord
from cli import exit_codes
from producer import Producer

#: Characters of a failure's message shown on the screen (`--json` has all of it).
MESSAGE_WIDTH = 70
#: Characters that would garble a terminal: a server's error text may hold any.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the status as JSON (with --watch, one line per refresh)"
    )
    parser.add_argument("--redis-url", help="Redis URL (default: redis.url from the configuration)")


async def run(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        print("arkq: --watch: SECONDS must be more than 0", file=sys.stderr)
        return exit_codes.USAGE
    async with Producer(args.redis_url) as producer:
        if args.watch is None:
            show(await producer.status(), as_json=args.json, redraw=False)
            return exit_codes.OK
        watching = asyncio.ensure_future(watch(producer, args.watch, as_json=args.json))
        # Ctrl-C is how a watch ends, whenever it comes. A handler of its own, as the job commands
        # have: Python's default one is not there when SIGINT came in ignored (a command started in
        # the background by a script), and the signal would not end the watch.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, watching.cancel)
        try:
            await watching
        except asyncio.CancelledError:
            return exit_codes.OK
        finally:
            loop.remove_signal_handler(signal.SIGINT)
    return exit_codes.OK


async def watch(producer: Producer, every_s: float, *, as_json: bool) -> None:
    """Show the status every `every_s` until cancelled. A Redis that fails is shown, not fatal: the
    watch goes on and shows the fleet again once Redis answers."""
    while True:
        try:
            found = await producer.status()
        except RedisFailure as error:
            if as_json:
                print(json.dumps({"at": time.time(), "error": str(error)}), flush=True)
            else:
                _draw(
                    f"{time.strftime('%H:%M:%S')}  {error}; trying again every {every_s:g} s\n", redraw=True
                )
        else:
            show(found, as_json=as_json, redraw=True)
        await asyncio.sleep(every_s)


def show(found: FleetStatus, *, as_json: bool, redraw: bool) -> None:
    if as_json:
        print(found.model_dump_json(), flush=True)
    else:
        _draw(render(found), redraw=redraw)


def _draw(screen: str, *, redraw: bool) -> None:
    if redraw and sys.stdout.isatty():
        sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: the screen redraws in place
    sys.stdout.write(screen)
    sys.stdout.flush()


def render(status: FleetStatus) -> str:
    """The status as a person reads it: the queue, the workers, the latest failures."""
    now = status.at
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [f"queue {status.queue}  at {clock}"]
    lines.append(
        f"  {status.queued:,} queued   {status.deferred:,} deferred   {status.running:,} running   "
        f"{status.workers_alive} worker{'s' if status.workers_alive != 1 else ''} alive   "
        f"{status.tokens_per_s:,.1f} tokens/s   queue time {_seconds(status.queue_time_s)}"
    )
    lines.append("")
    if status.workers:
        lines.append(
            f"  {'WORKER':<28} {'PID':>7} {'UP':>8} {'RUNNING':>9} {'ENDED':>8} {'TOKENS/S':>9}  STATE"
        )
        lines += [_worker_line(worker, now) for worker in status.workers]
    else:
        lines.append("  no worker has a heartbeat in Redis: none is running against this queue")
    lines.append("")
    if status.failures:
        lines.append(f"  latest failures, by kind   {'COUNT':>5}  {'LAST':>8}  MESSAGE")
        for group in status.failures:
            message = _CONTROL.sub(" ", group.last_message)
            if len(message) > MESSAGE_WIDTH:
                message = message[: MESSAGE_WIDTH - 1] + "…"
            lines.append(f"  {group.kind:<26} {group.count:>5}  {_ago(now - group.last_at):>8}  {message}")
        lines.append(
            "  (a failed job's whole story: `arkq result JOB_ID`; --json names the last of each kind)"
        )
    else:
        lines.append("  no failed jobs recorded")
    return "\n".join(lines) + "\n"


def _worker_line(worker: WorkerRecord, now: float) -> str:
    state = "alive" if worker.alive(now) else f"silent {_ago(now - worker.seen_at)}"
    running = f"{worker.running}/{worker.max_jobs}"
    return (
        f"  {worker.name:<28} {worker.pid:>7} {_ago(now - worker.started_at):>8} {running:>9} "
        f"{worker.jobs_ended:>8,} {worker.tokens_per_s:>9,.1f}  {state}"
    )


def _ago(seconds: float) -> str:
    whole = round(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d{whole % 86_400 // 3600:02d}h"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
