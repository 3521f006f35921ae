"""WatchAllJobs' messages: several events each, in order, bounded in count and in bytes."""

from __future__ import annotations

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.watch import ALL_JOBS_BATCH, ALL_JOBS_BATCH_BYTES, _batches


def test_events_go_in_order_at_most_a_batch_a_message() -> None:
    events = [pb.JobEvent(id=n, job_id="j") for n in range(1, 2 * ALL_JOBS_BATCH + 2)]
    messages = list(_batches(events))
    assert [len(m.events) for m in messages] == [ALL_JOBS_BATCH, ALL_JOBS_BATCH, 1]
    assert [e.id for m in messages for e in m.events] == [e.id for e in events]


def test_large_results_close_a_message_early_so_it_stays_far_below_the_channels_limit() -> None:
    # Completed events with results of up to 1 MiB each: 500 of them would be a 500 MiB message.
    big = "x" * (900 * 1024)
    events = [pb.JobEvent(id=n, job_id="j", result_json=big) for n in range(1, 41)]
    messages = list(_batches(events))
    assert all(m.ByteSize() <= 2 * ALL_JOBS_BATCH_BYTES for m in messages), [m.ByteSize() for m in messages]
    assert [e.id for m in messages for e in m.events] == list(range(1, 41))
    assert list(_batches([])) == []
