"""Pages of the job listing cut by encoded size as well as by count.

A ListJobs answer must stay under the gRPC message limit whatever the store holds. The stored size of a
job (its spec as protobuf JSON, its error and metrics) is known before the records are read; the binary
message can be larger than that JSON, at worst about 5.5 times for numbers inside a Struct (`0,` in
JSON, 11 bytes on the wire), so a page's stored bytes are kept under an eighth of the limit.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from tunewire_server.errors import FieldViolation, InvalidSpec
from tunewire_server.jobs.states import JobState
from tunewire_server.store import JobRecord, Store

JOB_OVERHEAD = 256  # id, state, times, counters and the message framing of one listed job
WIRE_GROWTH = 8  # the budget is the message limit divided by this


def page_budget(max_message_bytes: int) -> int:
    return max(max_message_bytes // WIRE_GROWTH, 1)


def cut_page(sizes: Sequence[int], page_size: int, budget: int) -> tuple[int, bool]:
    """How many of the jobs whose stored sizes are `sizes` (in listing order, up to page_size + 1 of them)
    go on this page, and whether more follow. A page holds at least one job, however large."""
    taken, total = 0, 0
    for size in sizes[:page_size]:
        total += size + JOB_OVERHEAD
        if taken and total > budget:
            break
        taken += 1
    return taken, len(sizes) > taken


def page(store: Store, states: Sequence[JobState], page_size: int, page_token: str,
         max_message_bytes: int) -> tuple[list[JobRecord], str]:
    """One page of jobs (newest first, at most page_size, 50 if 0, capped at 500, and sized to fit a
    message of max_message_bytes) and the token of the next page, "" at the end. The token is the last
    listed job's ordinal; a token this server did not issue raises InvalidSpec(page_token)."""
    size = min(page_size or 50, 500)
    before = None
    if page_token:
        try:
            before = int(base64.urlsafe_b64decode(page_token.encode()).decode())
        except ValueError:
            raise InvalidSpec(FieldViolation("page_token", "is not a token this server issued")) from None
    # Sized before read: a page never holds (nor reads) more than the message limit allows.
    sizes = store.list_sizes(states, before, size + 1)
    taken, more = cut_page([bytes_ for _, bytes_ in sizes], size, page_budget(max_message_bytes))
    if not taken:
        return [], ""
    jobs = store.jobs_by_ordinals([ordinal for ordinal, _ in sizes[:taken]])
    next_token = base64.urlsafe_b64encode(str(sizes[taken - 1][0]).encode()).decode() if more else ""
    return jobs, next_token
