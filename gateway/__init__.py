"""`arkq serve`: the queue behind an HTTP API.

OpenAI's Chat Completions (`/v1/chat/completions`, `/v1/models`) for any OpenAI client, and arkq's own
jobs API (`/v1/jobs`) for durable jobs whose event streams resume where a client left off. Stateless:
everything is in Redis, so any number of gateway processes serve the same jobs.
"""

from gateway.app import create_app

__all__ = ["create_app"]
