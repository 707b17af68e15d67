"""Enqueue generation jobs and read their streamed events and results.

async with Producer() as p:
    job = await p.enqueue([UserMessage(content="Hello!")])
    async for text in job.tokens():
        print(text, end="", flush=True)
    result = await job.result(timeout=60)
"""

from producer.errors import (
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobLost,
    JobNotFound,
    QueueFull,
    RedisUnavailable,
    StreamReset,
)
from producer.job import Job
from producer.producer import Producer

__all__ = [
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobLost",
    "JobNotFound",
    "Producer",
    "QueueFull",
    "RedisUnavailable",
    "StreamReset",
]
