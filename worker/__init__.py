"""arkq's worker: arq settings and the generation job. Start one with `arq worker.WorkerSettings`."""

from worker.settings import WorkerSettings

__all__ = ["WorkerSettings"]
