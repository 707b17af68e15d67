"""What an `arkq` command's exit status means: one table, for scripts that call it.

`MEANINGS` says each code's meaning in words; every command's `--help` lists its own codes from it, and
the README's table repeats it (a test keeps them in step).
"""

OK = 0
#: The job failed or was cancelled (the error is on stderr).
JOB_FAILED = 1
#: A request refused by validation, a bad setting or a bad argument.
USAGE = 2
#: No such job (or it was lost).
NOT_FOUND = 3
#: The job did not end within --timeout (it goes on).
TIMEOUT = 4
#: Redis did not answer (no connection, or no answer in time).
REDIS_UNREACHABLE = 5
#: The queue is full (queue.max_depth).
QUEUE_FULL = 6
#: No OpenAI-compatible server answers at llm.base_url (`arkq check-llm`).
LLM_UNREACHABLE = 7
#: Redis is out of memory and refuses writes (OOM: maxmemory reached, noeviction).
REDIS_OUT_OF_MEMORY = 8
#: Redis is a read-only replica (READONLY): redis.url does not point at the primary.
REDIS_READ_ONLY = 9
#: Redis refused the user, the password or a command (WRONGPASS, NOAUTH, NOPERM).
REDIS_NOT_ALLOWED = 10
#: Redis is busy running a script (BUSY) past its busy threshold.
REDIS_BUSY = 11
#: Redis answered with another error.
REDIS_REFUSED = 12
#: The job has no result yet: it is queued or running (`arkq result`).
NOT_ENDED = 13
#: The job ID names a job with a different request (`arkq submit --job-id`): nothing was enqueued.
JOB_ID_IN_USE = 14
#: The answer was cut at the token limit (finish_reason `length`): it is whole up to max_tokens.
ANSWER_CUT = 15
#: A bug in arkq: the error is on stderr in one line, the traceback with `arkq --debug`.
INTERNAL_ERROR = 70
#: The system refused something other than Redis (a port in use, a file that cannot be read).
SYSTEM_ERROR = 71
#: Interrupted (Ctrl-C); `arkq submit` cancels its job first, unless --detach.
INTERRUPTED = 130

MEANINGS: dict[int, str] = {
    OK: "done",
    JOB_FAILED: "the job failed or was cancelled (the error is on stderr)",
    USAGE: "a request refused by validation, a bad setting or a bad argument",
    NOT_FOUND: "no such job (or it was lost)",
    TIMEOUT: "the job did not end within --timeout (it goes on: `arkq watch` it)",
    REDIS_UNREACHABLE: "Redis unreachable",
    QUEUE_FULL: "the queue is full (queue.max_depth)",
    LLM_UNREACHABLE: "no LLM server answers at llm.base_url",
    REDIS_OUT_OF_MEMORY: "Redis out of memory (OOM)",
    REDIS_READ_ONLY: "Redis read-only (a replica)",
    REDIS_NOT_ALLOWED: "Redis refused the password, user or command (WRONGPASS, NOAUTH, NOPERM)",
    REDIS_BUSY: "Redis busy running a script",
    REDIS_REFUSED: "another Redis error",
    NOT_ENDED: "the job has no result yet: it is queued or running",
    JOB_ID_IN_USE: "--job-id names a job with a different request: nothing was enqueued",
    ANSWER_CUT: "the answer was cut at the token limit (finish_reason length)",
    INTERNAL_ERROR: "a bug in arkq (one line on stderr; `arkq --debug` for the traceback)",
    SYSTEM_ERROR: "the system refused (a port in use, a file)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}

#: The Redis failures any command that talks to Redis may end with.
REDIS_FAILURES = (
    REDIS_UNREACHABLE,
    REDIS_OUT_OF_MEMORY,
    REDIS_READ_ONLY,
    REDIS_NOT_ALLOWED,
    REDIS_BUSY,
    REDIS_REFUSED,
)


def describe(*codes: int) -> str:
    """The lines of a `--help` listing `codes` (and 70, a bug, which any command may end with)."""
    listed = sorted({*codes, INTERNAL_ERROR})
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {MEANINGS[code]}" for code in listed)
