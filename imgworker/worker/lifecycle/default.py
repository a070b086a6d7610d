"""The default lifecycle of a job, written once: the hooks in the order every phase calls them.

Adding a feature to every job is adding one line here (and its module). docs/reliability.md, "What happens
around a job", lists the same order; tests/unit/worker/test_lifecycle_order.py holds the two together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from imgworker.core.config import WorkerConfig
from imgworker.features.callbacks import CallbackPolicy
from imgworker.stores import Stores
from imgworker.worker.lifecycle.admission import Admission
from imgworker.worker.lifecycle.callback import Callback
from imgworker.worker.lifecycle.completion_notice import CompletionNotice
from imgworker.worker.lifecycle.failed_record import FailedRecord, open_records
from imgworker.worker.lifecycle.hook import Hook
from imgworker.worker.lifecycle.job_log import JobLog
from imgworker.worker.lifecycle.job_metrics import JobMetrics
from imgworker.worker.lifecycle.retries import Retries
from imgworker.worker.lifecycle.timing import Timing


def default_hooks(
    config: WorkerConfig, stores: Stores, *, worker_id: str, backend: str, stopped: asyncio.Event,
    check_fds: Callable[[], None],
) -> list[Hook]:
    """The hooks of a worker process, built from its config; ``stopped`` is set when it is asked to stop."""
    policy = CallbackPolicy(config.callback_allow)  # one allow-list: admission checks it, the sender obeys it
    records = open_records(config, stores)  # one --failed-jobs prefix: failed jobs and given-up callbacks
    return [
        Admission(policy, check_fds),
        Timing(),
        JobLog(),
        JobMetrics(backend),
        Retries(config.retries, config.retry_backoff, stopped),
        FailedRecord(records, worker_id),
        CompletionNotice(config.servers),
        Callback(config, policy, records, worker_id),
    ]
