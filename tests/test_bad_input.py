"""Bad input on every RPC gets INVALID_ARGUMENT (naming the field) or NOT_FOUND, never UNKNOWN or
INTERNAL, and never a half-written job."""

from __future__ import annotations

import base64
import json
import uuid

import asyncpg
import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .helpers import claim, enqueue

UNKNOWN = str(uuid.uuid4())
OK_PAYLOAD = '{"spec": {}}'

INVALID_ENQUEUES = {
    "job_type": pb.EnqueueRequest(user_id="u", payload_json=OK_PAYLOAD),
    "job_type ": pb.EnqueueRequest(job_type="Spread Sheet", user_id="u", payload_json=OK_PAYLOAD),
    "payload_json": pb.EnqueueRequest(job_type="pdf", user_id="u"),
    "payload_json ": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{not json"),
    "payload_json  ": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="[1, 2]"),
    "payload_json   ": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json='{"a": "\\u0000"}'),
    "user_id": pb.EnqueueRequest(job_type="pdf", payload_json=OK_PAYLOAD),
    "user_id ": pb.EnqueueRequest(job_type="pdf", user_id="a\x00b", payload_json=OK_PAYLOAD),
    "priority": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD, priority=10**6),
    "max_retries": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD, max_retries=-1),
    "delay_ms": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD, delay_ms=-5),
    "ttl_ms": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD, ttl_ms=-5),
    "title": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD, title="x" * 501),
    "idempotency_key": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD,
                                         idempotency_key="k" * 201),
    "expires_at": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD,
                                    expires_at={"seconds": 1}),
    # The first instant of year 1: read back by the driver as -infinity, which no answer can show.
    "run_at": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD,
                                run_at={"seconds": -62135596800}),
    "expires_at ": pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=OK_PAYLOAD,
                                     expires_at={"seconds": 253402300799}),  # the last second of 9999
}


@pytest.mark.parametrize("field", list(INVALID_ENQUEUES))
async def test_invalid_enqueue_names_the_field_and_writes_nothing(stub, database_url, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Enqueue(INVALID_ENQUEUES[field])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field.strip() + ":")
    assert ("docjobs-field", field.strip()) in tuple(err.value.trailing_metadata())
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM document_jobs") == 0
        assert await conn.fetchval("SELECT count(*) FROM job_events") == 0
    finally:
        await conn.close()


def bad_calls(stub, job_id: str, token: str):
    """(name, awaitable factory, expected code) for every RPC."""
    inv, nf, fp = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION

    async def drain(call):
        return [m async for m in call]

    def upload(*messages):
        async def gen():
            for m in messages:
                yield m
        return stub.UploadArtifact(gen())

    header = pb.ArtifactHeader(job_id=job_id, lease_token=token, filename="a.pdf", content_type="application/pdf")
    return [
        ("GetJob no id", lambda: stub.GetJob(pb.GetJobRequest()), inv),
        ("GetJob bad id", lambda: stub.GetJob(pb.GetJobRequest(job_id="nope")), inv),
        ("GetJob unknown", lambda: stub.GetJob(pb.GetJobRequest(job_id=UNKNOWN)), nf),
        ("ListJobs no scope", lambda: stub.ListJobs(pb.ListJobsRequest()), inv),
        ("ListJobs page size", lambda: stub.ListJobs(pb.ListJobsRequest(user_id="u", page_size=10_000)), inv),
        ("ListJobs token", lambda: stub.ListJobs(pb.ListJobsRequest(user_id="u", page_token="%%%")), inv),
        ("ListJobs status", lambda: stub.ListJobs(pb.ListJobsRequest(
            user_id="u", statuses=[99])), inv),  # type: ignore[list-item]  # no JobStatus: refused
        ("Cancel bad id", lambda: stub.Cancel(pb.CancelRequest(job_id="1")), inv),
        ("Cancel unknown", lambda: stub.Cancel(pb.CancelRequest(job_id=UNKNOWN)), nf),
        ("Claim no worker", lambda: stub.Claim(pb.ClaimRequest(job_types=["pdf"])), inv),
        ("Claim no types", lambda: stub.Claim(pb.ClaimRequest(worker_id="w")), inv),
        ("Claim bad type", lambda: stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["DROP TABLE"])), inv),
        ("Claim max jobs", lambda: stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], max_jobs=1000)), inv),
        ("Claim wait", lambda: stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], wait_ms=-1)), inv),
        ("Claim lease", lambda: stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], lease_ms=5)), inv),
        ("Heartbeat bad token", lambda: stub.Heartbeat(pb.HeartbeatRequest(job_id=job_id, lease_token="x")), inv),
        ("Heartbeat progress", lambda: stub.Heartbeat(pb.HeartbeatRequest(job_id=job_id, lease_token=token,
                                                                          progress=101)), inv),
        ("Heartbeat unknown", lambda: stub.Heartbeat(pb.HeartbeatRequest(job_id=UNKNOWN, lease_token=token)), nf),
        ("Heartbeat wrong token", lambda: stub.Heartbeat(pb.HeartbeatRequest(job_id=job_id, lease_token=UNKNOWN)),
         fp),
        ("Complete no token", lambda: stub.Complete(pb.CompleteRequest(job_id=job_id)), inv),
        ("Complete result", lambda: stub.Complete(pb.CompleteRequest(job_id=job_id, lease_token=token,
                                                                     result_json="[]")), inv),
        ("Complete artifact", lambda: stub.Complete(pb.CompleteRequest(job_id=job_id, lease_token=token,
                                                                       artifact_id="zz")), inv),
        ("Complete unknown", lambda: stub.Complete(pb.CompleteRequest(job_id=UNKNOWN, lease_token=token)), nf),
        ("Fail no code", lambda: stub.Fail(pb.FailRequest(job_id=job_id, lease_token=token)), inv),
        ("Fail unknown", lambda: stub.Fail(pb.FailRequest(job_id=UNKNOWN, lease_token=token, error_code="e")), nf),
        ("Upload empty", lambda: upload(), inv),
        ("Upload chunk first", lambda: upload(pb.UploadArtifactRequest(chunk=b"x")), inv),
        ("Upload path", lambda: upload(pb.UploadArtifactRequest(header=pb.ArtifactHeader(
            job_id=job_id, lease_token=token, filename="../etc/passwd", content_type="text/plain"))), inv),
        ("Upload two headers", lambda: upload(pb.UploadArtifactRequest(header=header),
                                              pb.UploadArtifactRequest(header=header)), inv),
        ("Download bad id", lambda: drain(stub.DownloadArtifact(pb.DownloadArtifactRequest(artifact_id="x"))), inv),
        ("Download unknown", lambda: drain(stub.DownloadArtifact(pb.DownloadArtifactRequest(artifact_id=UNKNOWN))),
         nf),
        ("Watch no scope", lambda: drain(stub.Watch(pb.WatchRequest())), inv),
        ("Watch bad id", lambda: drain(stub.Watch(pb.WatchRequest(job_id="x"))), inv),
        ("Watch negative", lambda: drain(stub.Watch(pb.WatchRequest(job_id=job_id, after_event_id=-1))), inv),
        ("Watch unknown", lambda: drain(stub.Watch(pb.WatchRequest(job_id=UNKNOWN))), nf),
    ]


async def test_every_rpc_answers_bad_input_with_a_clear_status(stub) -> None:
    job = await enqueue(stub, job_type="pdf")
    [c] = await claim(stub, types=("pdf",))
    for name, call, expected in bad_calls(stub, job.id, c.lease_token):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == expected, f"{name}: {err.value.code()} {err.value.details()}"
        assert err.value.details(), name
    # The job is untouched by all of it and still completes normally.
    done = await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=c.lease_token))
    assert done.status == pb.JOB_STATUS_COMPLETED


async def test_an_oversized_message_is_refused_cleanly(stub) -> None:
    huge = '{"x": "' + "a" * (17 * 1024 * 1024) + '"}'
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=huge))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    big = '{"x": "' + "a" * (5 * 1024 * 1024) + '"}'
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json=big))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "payload_json" in (err.value.details() or "")


async def test_bytes_that_are_no_message_get_invalid_argument_on_every_method(jobstore) -> None:
    """Raw garbage on the wire, on every method of the service (unary, server- and client-streaming):
    INVALID_ARGUMENT with a message, never INTERNAL or UNKNOWN, and the server keeps serving."""
    import random

    from docjobs.v1 import jobstore_pb2

    service = jobstore_pb2.DESCRIPTOR.services_by_name["JobStore"]
    identity = {"request_serializer": None, "response_deserializer": None}
    garbage = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\xff" * 11]
    rng = random.Random(20261128)
    garbage += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(60)]
    refused = 0
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        for data in garbage:
            try:
                if method.client_streaming:
                    call = jobstore.channel.stream_unary(path, **identity)
                    await call(iter([data]))
                elif method.server_streaming:
                    call = jobstore.channel.unary_stream(path, **identity)
                    async for _ in call(data):
                        pass
                else:
                    await jobstore.channel.unary_unary(path, **identity)(data)
            except grpc.aio.AioRpcError as err:
                assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                    method.name, data, err.code(), err.details())
                assert err.details(), (method.name, data)
                if "not a valid" in (err.details() or ""):
                    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
                    refused += 1
    assert refused >= len(service.methods) * 2  # the undecodable ones, at least, on every method
    assert (await jobstore.stub.GetStats(pb.GetStatsRequest())) is not None


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    _token(["2026-01-01T00:00:00+00:00", 5]),  # a job id that is no text
    base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # nested past Python's recursion limit
    _token(["0001-01-01T00:00:00+14:00", UNKNOWN]),  # a time before any Postgres takes
    _token(["9999-12-31T23:59:59-14:00", UNKNOWN]),  # and after
    _token(["2026-01-01T00:00:00", UNKNOWN]),  # no zone: not a time we handed out
    _token({"a": 1, "b": 2}),
    _token(["2026-01-01T00:00:00+00:00", UNKNOWN, "x"]),
], ids=["id not text", "deep nesting", "year 1", "year 9999", "naive time", "object", "three parts"])
async def test_a_forged_page_token_is_refused_by_name(stub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListJobs(pb.ListJobsRequest(user_id="u", page_token=token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert dict(err.value.trailing_metadata())["docjobs-field"] == "page_token"


async def test_a_page_token_handed_out_reads_the_next_page(stub) -> None:
    user = str(uuid.uuid4())
    ids = {(await enqueue(stub, user_id=user)).id for _ in range(3)}
    first = await stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=2))
    second = await stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=2, page_token=first.next_page_token))
    assert {j.id for j in first.jobs} | {j.id for j in second.jobs} == ids and not second.next_page_token
