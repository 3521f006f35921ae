"""Artifacts: chunked upload under a lease, streamed download, one artifact kept per job."""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
import uuid
from typing import Any

import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .helpers import claim, enqueue, query_value

MiB = 1024 * 1024


def upload_requests(job_id: str, token: str, chunks, filename: str = "report.xlsx",
                    content_type: str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"):
    async def gen():
        yield pb.UploadArtifactRequest(header=pb.ArtifactHeader(job_id=job_id, lease_token=token, filename=filename,
                                                                content_type=content_type))
        for chunk in chunks:
            yield pb.UploadArtifactRequest(chunk=chunk)

    return gen()


def pseudo_random_chunks(total: int, size: int, digest):
    """Deterministic incompressible bytes, made one chunk at a time (never the whole file)."""
    sent, counter = 0, 0
    while sent < total:
        # One allocation per chunk (a hash per 32 bytes made 1.6 million small objects for tracemalloc to trace).
        block = random.Random(counter).randbytes(min(size, total - sent))
        digest.update(block)
        sent += len(block)
        counter += 1
        yield block


async def download(stub, artifact_id: str, digest=None, user_id: str = ""):
    info, size = None, 0
    async for part in stub.DownloadArtifact(pb.DownloadArtifactRequest(artifact_id=artifact_id, user_id=user_id)):
        if part.WhichOneof("part") == "info":
            info = part.info
        else:
            size += len(part.chunk)
            if digest is not None:
                digest.update(part.chunk)
    return info, size


async def test_a_50_mb_artifact_round_trips_with_bounded_memory(stub, database_url) -> None:
    job = await enqueue(stub, job_type="pdf")
    [c] = await claim(stub, lease_ms=600_000)  # no heartbeat here: tracemalloc makes the upload slow on a busy machine
    total = 50 * MiB
    sent_digest, got_digest = hashlib.sha256(), hashlib.sha256()
    tracemalloc.start()
    try:
        artifact = await stub.UploadArtifact(upload_requests(job.id, c.lease_token,
                                                             pseudo_random_chunks(total, 256 * 1024, sent_digest)))
        info, size = await download(stub, artifact.id, got_digest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert artifact.size_bytes == total == size == info.size_bytes
    assert artifact.sha256 == sent_digest.hexdigest() == got_digest.hexdigest()
    # Client and server share this process: neither held the 50 MB file whole.
    assert peak < 16 * MiB, f"peak Python memory {peak / MiB:.1f} MiB"
    chunks = await query_value(database_url, "SELECT count(*) FROM artifact_chunks WHERE artifact_id = $1",
                               uuid.UUID(artifact.id))
    assert chunks == 50


async def test_complete_keeps_only_the_result_artifact(stub, database_url) -> None:
    job = await enqueue(stub, max_retries=1)
    [first] = await claim(stub, lease_ms=1000)
    orphan = await stub.UploadArtifact(upload_requests(job.id, first.lease_token, [b"first attempt"]))
    [second] = await claim(stub, wait_ms=15_000)  # the first worker "died" after uploading
    kept = await stub.UploadArtifact(upload_requests(job.id, second.lease_token, [b"second ", b"attempt"]))
    done = await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=second.lease_token,
                                                  artifact_id=kept.id, result_json='{"filename": "report.xlsx"}'))
    assert done.artifact_id == kept.id
    _, size = await download(stub, kept.id)
    assert size == len(b"second attempt")
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await download(stub, orphan.id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert await query_value(database_url, "SELECT count(*) FROM artifacts WHERE job_id = $1",
                             uuid.UUID(job.id)) == 1


async def test_upload_with_a_stale_lease_is_refused_and_leaves_nothing(stub, database_url) -> None:
    job = await enqueue(stub)
    [c] = await claim(stub)
    await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=c.lease_token))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UploadArtifact(upload_requests(job.id, c.lease_token, [b"late"]))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await query_value(database_url, "SELECT count(*) FROM artifacts") == 0


async def test_another_users_artifact_is_not_found(stub) -> None:
    job = await enqueue(stub, user_id="alice")
    [c] = await claim(stub)
    artifact = await stub.UploadArtifact(upload_requests(job.id, c.lease_token, [b"x"]))
    info, _ = await download(stub, artifact.id, user_id="alice")
    assert info.filename == "report.xlsx"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(stub, artifact.id, user_id="mallory")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_complete_with_an_artifact_of_another_job_is_invalid(stub) -> None:
    job_a = await enqueue(stub)
    job_b = await enqueue(stub)
    claimed = {c.job.id: c for c in await claim(stub, max_jobs=2)}
    art_b = await stub.UploadArtifact(upload_requests(job_b.id, claimed[job_b.id].lease_token, [b"b"]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete(pb.CompleteRequest(job_id=job_a.id, lease_token=claimed[job_a.id].lease_token,
                                               artifact_id=art_b.id))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "artifact_id" in (err.value.details() or "")


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def complete_with(job_id: str, token: str, content: bytes, **fields: str) -> pb.CompleteWithArtifactRequest:
    values: dict[str, Any] = {"job_id": job_id, "lease_token": token, "filename": "report.xlsx",
                              "content_type": XLSX, "content": content,
                              "result_json": '{"preview": {"kind": "spreadsheet"}}', **fields}
    return pb.CompleteWithArtifactRequest(**values)


async def test_complete_with_artifact_stores_the_file_and_completes_in_one_call(stub) -> None:
    job = await enqueue(stub, user_id="alice")
    [c] = await claim(stub)
    content = b"PK\x03\x04" + bytes(range(256)) * 9000  # over two stored chunks
    done = await stub.CompleteWithArtifact(complete_with(job.id, c.lease_token, content))
    assert done.status == pb.JOB_STATUS_COMPLETED and done.artifact_id
    result = json.loads(done.result_json)
    # The jobstore names the artifact in the result; the caller's own fields stay.
    assert result == {"preview": {"kind": "spreadsheet"}, "artifact_id": done.artifact_id,
                      "size_bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    digest = hashlib.sha256()
    info, size = await download(stub, done.artifact_id, digest, user_id="alice")
    assert (info.filename, info.content_type, size) == ("report.xlsx", XLSX, len(content))
    assert digest.hexdigest() == result["sha256"]
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_COMPLETED


async def test_complete_with_artifact_on_a_lost_lease_keeps_nothing(stub, database_url) -> None:
    job = await enqueue(stub, max_retries=1)
    [first] = await claim(stub, lease_ms=1000)
    [second] = await claim(stub, wait_ms=15_000)  # the first lease ran out; another worker has the job
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.CompleteWithArtifact(complete_with(job.id, first.lease_token, b"late"))
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.CompleteWithArtifact(complete_with(job.id, second.lease_token, b"on time"))
    with pytest.raises(grpc.aio.AioRpcError) as twice:  # a job completes once, with one artifact
        await stub.CompleteWithArtifact(complete_with(job.id, second.lease_token, b"again"))
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await query_value(database_url, "SELECT count(*) FROM artifacts WHERE job_id = $1",
                             uuid.UUID(job.id)) == 1


@pytest.mark.parametrize(("fields", "field"), [
    ({"filename": ""}, "filename"),
    ({"filename": "../etc/passwd"}, "filename"),
    ({"content_type": ""}, "content_type"),
    ({"result_json": "[1, 2]"}, "result_json"),
    ({"lease_token": "not-a-uuid"}, "lease_token"),
])
async def test_complete_with_artifact_names_the_bad_field(stub, database_url, fields, field) -> None:
    job = await enqueue(stub)
    [c] = await claim(stub)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.CompleteWithArtifact(complete_with(job.id, c.lease_token, b"x", **fields))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (bad.value.details() or "")
    assert await query_value(database_url, "SELECT count(*) FROM artifacts") == 0
    assert await query_value(database_url, "SELECT status FROM document_jobs WHERE id = $1",
                             uuid.UUID(job.id)) == "processing"


async def test_complete_with_artifact_refuses_a_file_over_4_mib(stub) -> None:
    job = await enqueue(stub)
    [c] = await claim(stub)
    with pytest.raises(grpc.aio.AioRpcError) as big:
        await stub.CompleteWithArtifact(complete_with(job.id, c.lease_token, b"\0" * (4 * MiB + 1)))
    assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UploadArtifact" in (big.value.details() or "")
