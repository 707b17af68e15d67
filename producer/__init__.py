"""Enqueue generation jobs and read their streamed events and results.

async with Producer() as p:
    job = await p.enqueue([UserMessage(content="Hello!")])
    async for text in job.tokens():
        print(text, end="", flush=True)
    result = await job.result(timeout=60)

An ARKOS agent runs on the queue unchanged when handed a `QueuedModelLink` instead of an `ArkModelLink`
(`producer.link`).

Importing the producer loads neither the LLM client nor arq: a web backend that only enqueues pays
for Redis, pydantic and the contract.
"""

from arkq.contract import Event, JobResult
from arkq.errors import (
    ArkqError,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobIdInUse,
    JobLost,
    JobNotFound,
    ModelError,
    QueueFull,
    RedisFailure,
    RedisUnavailable,
    StreamReset,
    TenantLimitReached,
)
from arkq.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage
from producer.job import Job
from producer.link import QueuedModelLink
from producer.producer import Producer, RequestOptions

__all__ = [
    "AIMessage",
    "ArkqError",
    "Event",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobIdInUse",
    "JobLost",
    "JobNotFound",
    "JobResult",
    "Message",
    "ModelError",
    "Producer",
    "QueueFull",
    "QueuedModelLink",
    "RedisFailure",
    "RedisUnavailable",
    "RequestOptions",
    "StreamReset",
    "SystemMessage",
    "TenantLimitReached",
    "ToolMessage",
    "UserMessage",
]
