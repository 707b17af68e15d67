"""What an `arkq` command's exit status means: one table, for scripts that call it."""

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
#: A bug in arkq: the error is on stderr in one line, the traceback with `arkq --debug`.
INTERNAL_ERROR = 70
#: The system refused something other than Redis (a port in use, a file that cannot be read).
SYSTEM_ERROR = 71
