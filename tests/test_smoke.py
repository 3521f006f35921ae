from __future__ import annotations

import json

from docjobs.v1 import jobstore_pb2 as pb

from .helpers import claim, enqueue


async def test_enqueue_claim_complete_round_trip(stub) -> None:
    job = await enqueue(stub, title="Sales report")
    assert job.status == pb.JOB_STATUS_PENDING
    [claimed] = await claim(stub)
    assert claimed.job.id == job.id
    assert claimed.job.status == pb.JOB_STATUS_PROCESSING
    done = await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed.lease_token,
                                                  result_json=json.dumps({"filename": "a.xlsx"})))
    assert done.status == pb.JOB_STATUS_COMPLETED
    assert json.loads(done.result_json) == {"filename": "a.xlsx"}
    fetched = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert fetched.status == pb.JOB_STATUS_COMPLETED
