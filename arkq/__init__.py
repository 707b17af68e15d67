"""arkq: LLM generation behind Redis, with every token streamed over pub/sub."""
