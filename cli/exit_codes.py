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
#: Redis did not answer.
REDIS_UNREACHABLE = 5
#: The queue is full (queue.max_depth).
QUEUE_FULL = 6
#: No OpenAI-compatible server answers at llm.base_url (`arkq check-llm`).
LLM_UNREACHABLE = 7
