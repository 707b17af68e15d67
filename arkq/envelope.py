"""arq's job envelope, as arkq writes and reads it: plain JSON, never pickle.

arq stores each job as `{"t": try, "f": function, "a": args, "k": kwargs, "et": enqueue ms}`, turned
into bytes by a serializer of the caller's choice; its default, pickle, would let anyone who can write
to Redis run code on a worker. arkq's producers write the envelope as JSON (`encode_job`, inside the
atomic enqueue script) and its workers read it back with `deserialize`, which arq calls for every job
it runs. Both sides are here, beside the contract but not inside it: the envelope is
arq's format, the request inside it (`GenerationRequest`) is arkq's.

This module does not import arq: producers stay free of arq's worker. `tests/unit/test_arq_internals.py`
checks that arq still reads what is written here.
"""

from __future__ import annotations

import json
import time
from typing import Any

#: The arq function name every arkq job runs.
JOB_FUNCTION = "generate"
#: Enqueue times arq can turn into a datetime: 2000-01-01 to 2100-01-01, in milliseconds.
_ENQUEUE_TIME_MS = range(946_684_800_000, 4_102_444_800_000)


def serialize(value: Any) -> bytes:
    """arq's job (and result) serializer: plain JSON, so a job in Redis is data, never code."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def encode_job(payload: dict[str, Any], *, enqueued_ms: int) -> bytes:
    """The envelope of a new job running `JOB_FUNCTION` on `payload`, as arq's `serialize_job` builds it."""
    return serialize({"t": None, "f": JOB_FUNCTION, "a": [payload], "k": {}, "et": enqueued_ms})


def deserialize(raw: bytes) -> Any:
    """arq's job deserializer. Anything that is not a well-formed arkq job still becomes a job of
    `JOB_FUNCTION`, carrying the reason in `undecodable`, so the worker fails that job alone with an
    `error` event: arq would otherwise drop it silently, or (for an envelope of the wrong types) crash
    the worker loop."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        return _undecodable(f"job payload is not JSON: {error}")
    problem = _envelope_problem(value)
    return _undecodable(problem) if problem else value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _envelope_problem(value: Any) -> str | None:
    if not isinstance(value, dict) or not {"f", "a", "k", "t", "et"} <= value.keys():
        return "job payload is not an arq job object"
    if value["f"] != JOB_FUNCTION:
        return f"job names function {value['f']!r}; arkq workers run only {JOB_FUNCTION!r}"
    if not isinstance(value["a"], list) or not isinstance(value["k"], dict):
        return "job arguments are not a list and an object"
    if value["k"]:
        return "job has keyword arguments; an arkq job takes one argument, the GenerationRequest object"
    job_try, enqueued = value["t"], value["et"]
    if job_try is not None and (type(job_try) is not int or job_try < 1):
        return f"job try {job_try!r} is not a positive integer"
    if type(enqueued) is not int or enqueued not in _ENQUEUE_TIME_MS:
        return f"job enqueue time {enqueued!r} is not a plausible Unix time in milliseconds"
    return None


def _undecodable(reason: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {"t": None, "f": JOB_FUNCTION, "a": [], "k": {"undecodable": reason}, "et": now_ms}


def enqueued_ms(raw: bytes | None) -> int | None:
    """The enqueue time (Unix ms) recorded in a stored envelope, if it is a readable one."""
    if raw is None:
        return None
    value = deserialize(raw)
    return None if "undecodable" in value["k"] else int(value["et"])
