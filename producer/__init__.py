"""Enqueue generation jobs and read their streamed events and results.

async with Producer() as p:
    job = await p.enqueue([UserMessage(content="Hello!")])
    async for text in job.tokens():
        print(text, end="", flush=True)
    result = await job.result(timeout=60)

Importing the producer loads neither the LLM client nor arq: a web backend that only enqueues pays
for Redis, pydantic and the contract.
"""

from arkq.contract import Event, JobResult
from arkq.errors import (
    ArkqError,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobLost,
    JobNotFound,
    QueueFull,
    RedisFailure,
    RedisUnavailable,
    StreamReset,
    TenantLimitReached,
)
from arkq.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage
from producer.job import Job
from producer.producer import Producer, RequestOptions

__all__ = [
    "AIMessage",
    "ArkqError",
    "Event",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobLost",
    "JobNotFound",
    "JobResult",
    "Message",
    "Producer",
    "QueueFull",
    "RedisFailure",
    "RedisUnavailable",
    "RequestOptions",
    "StreamReset",
    "SystemMessage",
    "TenantLimitReached",
    "ToolMessage",
    "UserMessage",
]
