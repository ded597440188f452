"""The batching job of a CRM account: its generation, its job id, and the kick that queues it.

Here rather than in bridge.jobs so that the web process (the console's replay button) can
queue it too: by the job's dotted name, as the receivers queue theirs, never importing
the worker side.
"""

from __future__ import annotations

import redis

from bridge.queue import HandoffQueue, job_id

# One CRM account per CRM today (one token each); the key leaves room for more.
DEFAULT_ACCOUNT = "default"
# A batching job's record only has to outlive its generation.
BATCH_RESULT_TTL = 3600
ADVANCE_READY = "bridge.jobs.advance_ready"


def generation_key(crm: str, account: str) -> str:
    return f"fullkit:batch:{crm}:{account}:generation"


def batch_job_id(crm: str, account: str, generation: int) -> str:
    return job_id("batch", crm, account, generation)


def kick(
    connection: redis.Redis, queue: HandoffQueue, crm: str, account: str = DEFAULT_ACCOUNT
) -> bool:
    """Make sure a batching job that has not yet looked for ready attempts is queued.

    The job of the current generation is that job: it moves the generation on before it
    looks, so an attempt recorded before this call is seen by it or by the next one.
    """
    generation = int(connection.get(generation_key(crm, account)) or 0)
    # At the front: in a burst, the intake jobs of later deliveries would otherwise keep
    # the first batch (and the CRM's first calls) waiting until every delivery is recorded.
    return queue.enqueue_unique(
        ADVANCE_READY,
        batch_job_id(crm, account, generation),
        crm,
        account,
        result_ttl=BATCH_RESULT_TTL,
        at_front=True,
    )
