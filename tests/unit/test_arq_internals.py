"""arq is extended in the open (`worker/arq_patches.py`): these tests fail, saying what to re-check,
when the arq code the extension relies on changes, and show that nothing changes until a worker starts."""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
from importlib import import_module

import arq
import arq.constants
import arq.jobs
import arq.worker
import pytest

from arkq import keys
from arkq.envelope import JOB_FUNCTION, deserialize, encode_job, serialize
from worker import arq_patches


def _fingerprint(dotted: str) -> str:
    """The first 16 hex digits of the SHA-256 of the source of `arq.<module>.<name>[.<name>]`."""
    parts = dotted.split(".")
    target = import_module(".".join(parts[:2]))
    for name in parts[2:]:
        target = getattr(target, name)
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()[:16]


def test_arq_is_the_release_the_patches_were_written_for() -> None:
    assert arq.VERSION == arq_patches.ARQ_VERSION, (
        f"arq {arq.VERSION} is installed; worker/arq_patches.py was written for "
        f"arq {arq_patches.ARQ_VERSION}. "
        "Re-check every entry of ARQ_INTERNALS against the new release, then update ARQ_VERSION and the pin "
        "in pyproject.toml."
    )


@pytest.mark.parametrize("name", sorted(arq_patches.ARQ_INTERNALS))
def test_the_arq_code_the_patches_rely_on_is_unchanged(name: str) -> None:
    recorded, relied_on_for = arq_patches.ARQ_INTERNALS[name]
    now = _fingerprint(name)
    assert now == recorded, (
        f"{name} changed in arq {arq.VERSION} (fingerprint {now}, was {recorded}). Re-check in "
        f"worker/arq_patches.py: {relied_on_for}. Then record the new fingerprint in ARQ_INTERNALS."
    )


def test_arq_still_loops_on_the_poll_that_the_patch_replaces() -> None:
    assert arq.worker.poll is not None and "poll(self.poll_delay_s)" in inspect.getsource(
        arq.worker.Worker.main
    )


def test_arqs_key_names_are_the_ones_arkq_spells() -> None:
    assert arq.constants.job_key_prefix == keys.ARQ_JOB_PREFIX
    assert arq.constants.in_progress_key_prefix == keys.ARQ_CLAIM_PREFIX
    assert arq.constants.retry_key_prefix == keys.ARQ_RETRY_PREFIX
    assert arq.constants.result_key_prefix == keys.ARQ_RESULT_PREFIX
    assert arq.constants.health_check_key_suffix == keys.ARQ_HEALTH_CHECK_SUFFIX
    assert arq.constants.expires_extra_ms == keys.ARQ_JOB_EXPIRES_EXTRA_MS


def test_arq_reads_the_envelope_arkq_writes() -> None:
    raw = encode_job({"messages": []}, enqueued_ms=1_700_000_000_000)
    assert raw == arq.jobs.serialize_job(
        JOB_FUNCTION, ({"messages": []},), {}, None, 1_700_000_000_000, serializer=serialize
    )
    function, args, kwargs, job_try, enqueued = arq.jobs.deserialize_job_raw(raw, deserializer=deserialize)
    assert (function, args, kwargs, job_try, enqueued) == (
        JOB_FUNCTION,
        [{"messages": []}],
        {},
        None,
        1_700_000_000_000,
    )


def test_importing_the_worker_patches_nothing_until_a_worker_starts() -> None:
    """Only the worker's start-up installs the patches: importing `worker` (or `worker.job`) changes
    nothing in arq, so other arq workers and tests are left alone."""
    program = (
        "import arq.utils, arq.worker\n"
        "original = (arq.worker.poll, arq.worker.Worker._poll_iteration)\n"
        "import worker, worker.job, worker.settings\n"
        "assert (arq.worker.poll, arq.worker.Worker._poll_iteration) == original, 'patched on import'\n"
        "from worker import arq_patches\n"
        "arq_patches.install()\n"
        "assert arq.worker.poll is not original[0] and arq.worker.Worker._poll_iteration is not original[1]\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


async def test_a_worker_that_is_not_arkqs_keeps_arqs_own_poll_round(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    async def arqs_round(worker: object) -> None:
        calls.append(worker)

    monkeypatch.setattr(arq_patches, "_arq_poll_iteration", arqs_round)
    plain = arq.worker.Worker(functions=[arq.worker.func(noop, name="noop")], handle_signals=False)
    await arq_patches.poll_round(plain)
    assert calls == [plain]


async def noop(ctx: dict[str, object]) -> None:
    return None


def test_arqs_job_line_shows_arguments_only_through_args_to_string() -> None:
    """`worker.log_content` rests on this: arq formats a job's arguments for its `→` line with the
    module's `args_to_string` (which the patch replaces), and its `←` result only under `log_results`."""
    source = inspect.getsource(arq.worker.Worker.run_job)
    assert "s = args_to_string(args, kwargs)" in source
    assert "'%6.2fs → %s(%s)%s', (start_ms - enqueue_time_ms) / 1000, ref, s, extra" in source
    assert "'' if result is None or not self.log_results else truncate(repr(result))" in source


def test_a_jobs_arguments_are_summarised_without_their_text() -> None:
    payload = {"messages": [{"role": "user", "content": "my secret prompt"}], "max_tokens": 5}
    summary = arq_patches.job_args_summary((payload,), {"extra": "secret", "n": 3})
    assert "secret" not in summary
    assert summary.startswith("<1 messages, ") and summary.endswith(", extra=<str of 6>, n=3")


def test_install_summarises_job_lines_unless_content_logging_is_on() -> None:
    program = (
        "import arq.utils, arq.worker\n"
        "from worker import arq_patches\n"
        "arq_patches.install()\n"
        "assert arq.worker.args_to_string is arq_patches.job_args_summary\n"
        "arq_patches.install(log_content=True)\n"
        "assert arq.worker.args_to_string is arq.utils.args_to_string\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
