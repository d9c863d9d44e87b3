"""Pages of the job listing cut by encoded size as well as by count.

A ListJobs answer must stay under the gRPC message limit whatever the store holds. The stored size of a
job (its spec as protobuf JSON, its error and metrics) is known before the records are read; the binary
message can be larger than that JSON, at worst about 5.5 times for numbers inside a Struct (`0,` in
JSON, 11 bytes on the wire), so a page's stored bytes are kept under an eighth of the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

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
