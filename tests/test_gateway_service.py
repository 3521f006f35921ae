"""A backend acting for its users (service tokens) and the knobs a job request may set (expiry, start time,
retries), over real HTTP against a real jobstore, and a real renderer where a job must finish."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .conftest import wait_until
from .gateway_client import SECRET, bearer, read_sse, start_gateway
from .renderers import RendererProcess, example

SERVICE_SECRET = "service-secret-0123456789abcdef-0123456789"
# The seed's request, verbatim: the body a chat backend sends for its user 123.
SEED_CODE = """from openpyxl import Workbook
wb = Workbook()
ws = wb.active
ws.title = "Sales"
ws.append(["Region", "Revenue"])
ws.append(["North", 1200])
wb.save("output.xlsx")
"""
SEED_BODY = {"code": SEED_CODE, "documentType": "spreadsheet", "title": "Q3 sales", "sessionId": "chat-42",
             "userId": 123, "priority": 5}


def service_token(secret: str = SECRET, scope: object = "docjobs:service", **claims: Any) -> dict[str, str]:
    payload: dict[str, Any] = {"sub": "chat-backend", "exp": int(time.time()) + 600, **claims}
    if scope is not None:
        payload["scope"] = scope
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


async def post(http, gateway, body, headers) -> tuple[int, dict[str, Any]]:
    async with http.post(gateway.base + "/api/jobs", json=body, headers=headers) as r:
        return r.status, await r.json()


async def get(http, gateway, path, headers) -> tuple[int, dict[str, Any]]:
    async with http.get(gateway.base + path, headers=headers) as r:
        return r.status, await r.json()


async def test_the_seeds_request_from_a_service_makes_a_job_of_user_123(http, gateway, jobstore, tmp_path) -> None:
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()  # code mode off, the default
    try:
        status, created = await post(http, gateway, SEED_BODY, service_token())
        assert status == 202, created
        assert created["sessionEventsUrl"].startswith("/api/events?sessionId=chat-42&token=")
        # The job is user 123's: that user reads it (and its URLs are minted for it), another user does not.
        status, job = await get(http, gateway, created["statusUrl"], bearer("123"))
        assert status == 200 and job["userId"] == "123" and job["priority"] == 5 and job["sessionId"] == "chat-42"
        status, _ = await get(http, gateway, f"/api/jobs/{created['jobId']}", bearer("124"))
        assert status == 404
        stream = await read_sse(http, gateway.base + created["eventsUrl"])  # the link works without a header
        assert stream.events[-1].name == "job-failed"
        assert stream.events[-1].data["error"]["code"] == "code_execution_disabled"
        # A service reads any user's job, and lists a user's jobs.
        status, job = await get(http, gateway, f"/api/jobs/{created['jobId']}", service_token())
        assert status == 200 and job["status"] == "failed"
        status, page = await get(http, gateway, "/api/jobs?userId=123", service_token())
        assert status == 200 and [j["jobId"] for j in page["jobs"]] == [created["jobId"]]
        status, page = await get(http, gateway, "/api/jobs?userId=123", bearer("123"))
        assert status == 200 and [j["jobId"] for j in page["jobs"]] == [created["jobId"]]
        status, page = await get(http, gateway, "/api/jobs?userId=123", bearer("124"))
        assert status == 403 and page["error"]["field"] == "userId"
    finally:
        await renderer.shutdown()


async def test_a_service_job_renders_for_its_user_and_the_user_downloads_it(http, gateway, jobstore, tmp_path) -> None:
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    try:
        status, created = await post(http, gateway, {**example("spreadsheet"), "userId": "u-7"}, service_token())
        assert status == 202
        stream = await read_sse(http, gateway.base + created["eventsUrl"])
        assert stream.events[-1].name == "job-complete"
        async with http.get(gateway.base + stream.events[-1].data["result"]["downloadUrl"]) as r:
            assert r.status == 200 and len(await r.read()) > 0
        async with http.get(gateway.base + f"/api/jobs/{created['jobId']}/artifact", headers=bearer("u-7")) as r:
            assert r.status == 200
        async with http.get(gateway.base + f"/api/jobs/{created['jobId']}/artifact", headers=bearer("u-8")) as r:
            assert r.status == 404
    finally:
        await renderer.shutdown()


@pytest.mark.parametrize(("user", "message"), [
    (None, "required"), ("", "1 to 200"), (True, "string or an integer"), (1.5, "string or an integer"),
    ([123], "string or an integer"), (-1, "from 0"), (2**63, "from 0"), ("a\x01b", "control"), ("x" * 201, "200")])
async def test_a_service_must_name_the_user_the_job_is_for(http, gateway, stub, user, message) -> None:
    body = {**example("pdf"), "title": "x"}
    if user is not None:
        body["userId"] = user
    status, answer = await post(http, gateway, body, service_token())
    assert status == 422, answer
    assert answer["error"]["field"] == "userId" and message in answer["error"]["message"]
    assert sum(c.count for c in (await stub.GetStats(pb.GetStatsRequest())).counts) == 0


async def test_only_a_service_sets_the_priority(http, gateway) -> None:
    for headers, expected in ((bearer("123"), 0), (service_token(), 900)):
        status, created = await post(http, gateway, {**example("pdf"), "userId": 123, "priority": 900}, headers)
        assert status == 202
        _, job = await get(http, gateway, created["statusUrl"], bearer("123"))
        assert job["priority"] == expected
    # A user's priority is ignored, but a malformed one is still an error.
    status, answer = await post(http, gateway, {**example("pdf"), "priority": 5000}, bearer("123"))
    assert status == 422 and answer["error"]["field"] == "priority"


async def test_a_service_cancels_and_streams_any_job(http, gateway) -> None:
    status, created = await post(http, gateway, {**example("pdf"), "userId": "u-1"}, service_token())
    assert status == 202
    async with http.delete(gateway.base + f"/api/jobs/{created['jobId']}", headers=service_token()) as r:
        assert r.status == 200 and (await r.json())["status"] == "cancelled"
    stream = await read_sse(http, gateway.base + f"/api/jobs/{created['jobId']}/events", headers=service_token())
    assert [e.name for e in stream.events] == ["status", "job-failed"]
    status, answer = await get(http, gateway, "/api/jobs", service_token())  # whose? a service must say
    assert status == 400 and answer["error"]["field"] == "userId"


async def test_what_is_not_a_service_token(http, jobstore) -> None:
    """One secret: a token with the scope is a service's; without it, a user's (so its userId must be its
    own sub); signed with another secret, nothing. Two secrets: the scope goes with the service secret only."""
    gateway = await start_gateway(jobstore.address)
    try:
        body = {**example("pdf"), "userId": 123}
        status, answer = await post(http, gateway, body, service_token(secret=SERVICE_SECRET))
        assert status == 401, answer
        status, answer = await post(http, gateway, body, service_token(scope="docjobs:read openid"))
        assert status == 403 and answer["error"]["field"] == "userId"  # a user token named chat-backend
        status, answer = await post(http, gateway, body, service_token(scope=["docjobs:service"]))  # not a string
        assert status == 403 and answer["error"]["field"] == "userId"
        status, _ = await post(http, gateway, body, service_token(scope="openid docjobs:service"))
        assert status == 202
        status, answer = await post(http, gateway, body, service_token(exp=int(time.time()) + 10 * 86400))
        assert status == 401 and "DOCJOBS_JWT_MAX_TTL_S" in answer["error"]["message"]
    finally:
        await gateway.stop()
    gateway = await start_gateway(jobstore.address, service_jwt_secret=SERVICE_SECRET)
    try:
        status, _ = await post(http, gateway, body, service_token(secret=SERVICE_SECRET))
        assert status == 202
        status, answer = await post(http, gateway, body, service_token())  # the scope, with the users' secret
        assert status == 401 and "DOCJOBS_SERVICE_JWT_SECRET" in answer["error"]["message"]
        status, answer = await post(http, gateway, body, service_token(secret=SERVICE_SECRET, scope=None))
        assert status == 401 and "docjobs:service" in answer["error"]["message"]
        status, _ = await post(http, gateway, body, bearer("123"))  # users keep their secret
        assert status == 202
    finally:
        await gateway.stop()


def rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


BAD_KNOBS = [
    ("expiresInSeconds", 0, "from 1 to 604800"), ("expiresInSeconds", 604801, "from 1 to 604800"),
    ("expiresInSeconds", "60", "integer"), ("expiresInSeconds", 1.5, "integer"), ("expiresInSeconds", True, "integer"),
    ("maxRetries", -1, "from 0 to 10"), ("maxRetries", 11, "from 0 to 10"), ("maxRetries", "2", "integer"),
    ("runAt", "tomorrow", "RFC 3339"), ("runAt", "2026-12-01T09:00:00", "RFC 3339"),
    ("runAt", "2026-12-01", "RFC 3339"), ("runAt", "2026-13-01T09:00:00Z", "not a valid"),
    ("runAt", "2026-12-01T09:00:00+25:00", "not a valid"), ("runAt", "9999-12-31T23:59:59-23:59", "not a valid"),
    ("runAt", 1764579600, "RFC 3339"), ("runAt", "far", "RFC 3339"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_KNOBS)
async def test_a_knob_out_of_range_is_a_422_naming_it(http, gateway, stub, field, value, message) -> None:
    status, answer = await post(http, gateway, {**example("pdf"), field: value}, bearer("knobs"))
    assert status == 422, answer
    assert answer["error"]["field"] == field and message in answer["error"]["message"], answer
    assert list((await stub.ListJobs(pb.ListJobsRequest(user_id="knobs"))).jobs) == []


async def test_run_at_bounds(http, gateway, stub) -> None:
    now = datetime.now(UTC)
    status, answer = await post(http, gateway, {**example("pdf"), "runAt": rfc3339(now + timedelta(days=31))},
                                bearer("knobs"))
    assert status == 422 and answer["error"]["field"] == "runAt" and "2592000 s ahead" in answer["error"]["message"]
    status, answer = await post(http, gateway, {**example("pdf"), "runAt": rfc3339(now + timedelta(hours=2)),
                                                "expiresInSeconds": 3600}, bearer("knobs"))
    assert status == 422 and answer["error"]["field"] == "expiresInSeconds"
    # In the past: due at once; another offset, and fractions beyond microseconds, are read as written.
    status, created = await post(http, gateway, {**example("pdf"), "runAt": "2020-01-01T10:00:00.1234567+02:00"},
                                 bearer("knobs"))
    assert status == 202
    _, job = await get(http, gateway, created["statusUrl"], bearer("knobs"))
    assert job["runAt"] == "2020-01-01T08:00:00.123456Z"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-23:59", "1969-12-31T23:59:59Z",
                                  "9999-12-31T23:59:59Z"])
async def test_a_run_at_no_answer_could_show_is_refused_and_nothing_stored(http, gateway, stub, when) -> None:
    """The first instant of year 1 was stored, read back by the database driver as -infinity, and every
    answer naming the job failed: its POST (502, the job stored all the same), its user's list, and the
    worker session it was pushed on."""
    user = f"run-at-{uuid.uuid4().hex[:8]}"
    status, answer = await post(http, gateway, {**example("pdf"), "runAt": when}, bearer(user))
    assert status == 422 and answer["error"]["field"] == "runAt", answer
    assert list((await stub.ListJobs(pb.ListJobsRequest(user_id=user))).jobs) == []
    status, listing = await get(http, gateway, "/api/jobs", bearer(user))
    assert status == 200 and listing["jobs"] == []


async def test_expires_in_seconds_fails_a_job_not_done_by_then(http, gateway) -> None:
    status, created = await post(http, gateway, {**example("pdf"), "expiresInSeconds": 1}, bearer("knobs"))
    assert status == 202  # no renderer: it is never claimed
    stream = await read_sse(http, gateway.base + created["eventsUrl"])
    assert stream.events[-1].name == "job-failed" and stream.events[-1].data["error"]["code"] == "expired"
    _, job = await get(http, gateway, created["statusUrl"], bearer("knobs"))
    lifetime = datetime.fromisoformat(job["expiresAt"]) - datetime.fromisoformat(job["createdAt"])
    assert timedelta(seconds=0.5) < lifetime < timedelta(seconds=1.5)


async def test_run_at_delays_the_claim(http, gateway, stub) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=1.5)
    status, created = await post(http, gateway, {**example("pdf"), "runAt": rfc3339(run_at)}, bearer("knobs"))
    assert status == 202
    first = await stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], max_jobs=1, wait_ms=0))
    assert list(first.jobs) == []  # not due yet

    async def claimed() -> pb.ClaimedJob | None:
        reply = await stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], max_jobs=1, wait_ms=200))
        return reply.jobs[0] if reply.jobs else None

    job = await wait_until(claimed, timeout=10)
    assert job.job.id == created["jobId"]
    assert datetime.now(UTC) >= run_at - timedelta(milliseconds=50)


async def test_max_retries_caps_the_retries(http, gateway, stub) -> None:
    status, created = await post(http, gateway, {**example("pdf"), "maxRetries": 1}, bearer("knobs"))
    assert status == 202
    attempts = 0

    async def fail_once() -> bool:
        nonlocal attempts
        reply = await stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], max_jobs=1, wait_ms=200))
        for claimed in reply.jobs:
            attempts += 1
            await stub.Fail(pb.FailRequest(job_id=claimed.job.id, lease_token=claimed.lease_token,
                                           error_code="boom", error_message="failed on purpose", retryable=True))
        job = await stub.GetJob(pb.GetJobRequest(job_id=created["jobId"]))
        return job.status == pb.JOB_STATUS_FAILED

    await wait_until(fail_once, timeout=20)
    assert attempts == 2  # the first attempt and one retry
    _, job = await get(http, gateway, created["statusUrl"], bearer("knobs"))
    assert job["maxRetries"] == 1 and job["status"] == "failed" and job["attempts"] == 2


async def test_a_document_in_chinese_is_measured_by_its_bytes_not_its_escapes(http, gateway, stub) -> None:
    """2.4 MB of Chinese (a third of the characters of the same size in English) was sent on \\u-escaped,
    6 bytes a character, and refused as larger than the 4 MiB a payload may be."""
    paragraph = "文档生成" * 5_000  # 20,000 characters, 60,000 bytes
    spec = {"blocks": [{"type": "paragraph", "text": paragraph} for _ in range(40)]}
    body = {"documentType": "document", "title": "报告", "spec": spec}
    raw = json.dumps(body, ensure_ascii=False).encode()  # as a browser's fetch sends it
    assert 2_300_000 < len(raw) < 2_500_000
    async with http.post(gateway.base + "/api/jobs", data=io.BytesIO(raw),
                         headers={**bearer("knobs"), "Content-Type": "application/json"}) as reply:
        status, created = reply.status, await reply.json()
    assert status == 202, created
    job = await stub.GetJob(pb.GetJobRequest(job_id=created["jobId"], include_payload=True))
    assert json.loads(job.payload_json)["spec"] == spec and job.title == "报告"


async def test_a_service_s_large_downloads_count_against_each_job_s_user(http, jobstore, stub) -> None:
    """A backend downloading its users' documents: each large download counts against the job's user
    (DOCJOBS_DOWNLOADS_PER_USER), as the user's own would. They all counted against one user of no name,
    the service's, so with the bound at 1 a backend could send one large document at a time in all."""
    from .helpers import claim

    gateway = await start_gateway(jobstore.address, downloads_per_user=1)
    stalled: list[asyncio.StreamWriter] = []
    try:
        chunk = bytes(range(256)) * 4096  # 1 MiB
        size = 40 * len(chunk)

        async def finished(user: str) -> str:
            """A job of the user's done with a 40 MiB document; the path that downloads it."""
            status, created = await post(http, gateway, {**example("pdf"), "userId": user}, service_token())
            assert status == 202, created
            [job] = await claim(stub, types=("pdf",))

            async def parts():
                yield pb.UploadArtifactRequest(header=pb.ArtifactHeader(
                    job_id=job.job.id, lease_token=job.lease_token, filename="big.pdf", content_type="application/pdf"))
                for _ in range(size // len(chunk)):
                    yield pb.UploadArtifactRequest(chunk=chunk)

            artifact = await stub.UploadArtifact(parts())
            await stub.Complete(pb.CompleteRequest(job_id=job.job.id, lease_token=job.lease_token,
                                                   artifact_id=artifact.id))
            return f"/api/jobs/{job.job.id}/artifact"

        alices, bobs = await finished("alice"), await finished("bob")
        # The backend starts alice's and stops reading it.
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gateway.base.rsplit(":", 1)[1]))
        stalled.append(writer)
        writer.write(f"GET {alices} HTTP/1.1\r\nHost: test\r\nAuthorization: {service_token()['Authorization']}"
                     "\r\n\r\n".encode())
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        async with http.get(gateway.base + bobs, headers=service_token()) as r:  # bob's is bob's own count
            assert r.status == 200 and len(await r.read()) == size
        async with http.get(gateway.base + alices, headers=service_token()) as r:  # alice's second waits
            assert r.status == 429 and (await r.json())["error"]["field"] == "download"
    finally:
        for writer in stalled:
            writer.close()
        await gateway.stop()
