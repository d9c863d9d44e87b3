"""Issue 12 item 9: listings stay under the message limit whatever the store holds. Oversized records are
written straight into the store (submit now refuses them), then listed through a real server."""

from __future__ import annotations

import json

import grpc

import tunewire
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

LIMIT = 4 * 1024 * 1024  # the server's message limit in this test: 14 MB of records cannot fit one answer


def store_jobs(store, count: int, name_bytes: int, prefix: str) -> list[str]:
    ids = []
    for i in range(count):
        job_id = f"job-{prefix}{i:03d}"
        spec = {"base_model": "tiny-bert", "classification": {}, "display_name": "n" * name_bytes}
        store.create_job(job_id, json.dumps(spec), None, ("state_change", {"state": "QUEUED", "message": "queued"}))
        ids.append(job_id)
    return ids


def test_a_listing_of_huge_records_is_cut_by_size_and_pages_on(server_factory):
    st = server_factory(max_message_bytes=LIMIT, max_queued_jobs=1000)
    stored = store_jobs(st.server.store, 5, 10, "a") + store_jobs(st.server.store, 14, 1024 * 1024, "b") \
        + store_jobs(st.server.store, 30, 10, "c")
    newest_first = stored[::-1]
    with grpc.insecure_channel(st.address, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]) as ch:
        stub = pb_grpc.TuningServiceStub(ch)
        pages, token = [], ""
        while True:
            page = stub.ListJobs(pb.ListJobsRequest(page_size=500, page_token=token), timeout=30)
            assert page.ByteSize() < LIMIT
            pages.append([job.id for job in page.jobs])
            token = page.next_page_token
            if not token:
                break
    assert [job_id for page in pages for job_id in page] == newest_first  # each once, in order
    assert pages[0] == newest_first[:30]  # the small jobs share a page
    assert all(len(page) == 1 for page in pages[1:15])  # a huge one per page
    with tunewire.Client(st.address, timeout=30) as client:  # the SDK follows the pages
        assert [job.id for job in client.list_jobs(page_size=500)] == newest_first
        assert [job.id for job in client.list_jobs(page_size=7)][:10] == newest_first[:10]
