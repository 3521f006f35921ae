"""The jobstore answers only callers that present the shared secret (DOCJOBS_GRPC_TOKEN), over real gRPC
to a real jobstore process; its health service and reflection stay open; it does not start without the
secret; and `docjobs up` makes one per run and hands it to everything it starts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from docjobs.channels import TOKEN_ENV, jobstore_channel, jobstore_channel_blocking, new_token
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from .conftest import GRPC_TOKEN
from .gateway_client import bearer, start_gateway
from .processes import JobStoreProcess, StackProcess, wait_for
from .renderers import example

# Each refused the same way: nothing in the answer says which part was wrong.
WRONG = {
    "no token": None,
    "a wrong token of the same length": "x" * len(GRPC_TOKEN),
    "the right token and one character more": GRPC_TOKEN + "x",
    "the right token but its last character": GRPC_TOKEN[:-1],
    "a token of another scheme": "",
}


def _channel(address: str, token: str | None) -> grpc.aio.Channel:
    if token is None:
        return grpc.aio.insecure_channel(address)
    if token == "":  # the right secret, not as a bearer token
        return grpc.aio.insecure_channel(address, interceptors=[_Raw(f"Basic {GRPC_TOKEN}")])
    return jobstore_channel(address, token)


class _Raw(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor,
           grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, value: str) -> None:
        self.value = value

    def _details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(d.method, d.timeout, grpc.aio.Metadata(("authorization", self.value)),
                                          d.credentials, d.wait_for_ready)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


async def _calls(stub: pb_grpc.JobStoreAsyncStub, job_id: str) -> dict[str, grpc.aio.AioRpcError | object]:
    """Enqueue, Claim, Watch (server streaming) and UploadArtifact (client streaming): each call's
    answer, or the error it ended with."""
    async def upload() -> AsyncIterator[pb.UploadArtifactRequest]:
        yield pb.UploadArtifactRequest(header=pb.ArtifactHeader(job_id=job_id, lease_token="t", filename="a.pdf",
                                                                content_type="application/pdf"))
        yield pb.UploadArtifactRequest(chunk=b"%PDF-1.7")

    async def watch() -> list[pb.JobEvent]:
        return [event async for event in stub.Watch(pb.WatchRequest(job_id=job_id))]

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "Enqueue": lambda: stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{}")),
        "Claim": lambda: stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["none"], max_jobs=1)),
        "Watch": watch,
        "UploadArtifact": lambda: stub.UploadArtifact(upload()),
    }
    answers: dict[str, grpc.aio.AioRpcError | object] = {}
    for name, call in calls.items():
        try:
            async with asyncio.timeout(10):
                answers[name] = await call()
        except grpc.aio.AioRpcError as exc:
            answers[name] = exc
    return answers


async def test_only_callers_with_the_secret_reach_the_jobstore(database_url) -> None:
    store = JobStoreProcess(database_url).start()
    try:
        await asyncio.to_thread(store.wait_healthy)
        async with jobstore_channel(store.address, GRPC_TOKEN) as channel:
            stub = pb_grpc.JobStoreStub(channel)
            job = (await stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{}"))).job
            await stub.Cancel(pb.CancelRequest(job_id=job.id))  # so that a Watch of it ends
            allowed = await _calls(stub, job.id)
        # With the secret every call is answered by the service itself (an upload with no lease is its
        # own refusal, not ours).
        assert isinstance(allowed["Enqueue"], pb.EnqueueResponse)
        assert isinstance(allowed["Claim"], pb.ClaimResponse)
        assert isinstance(allowed["Watch"], list) and allowed["Watch"]
        upload = allowed["UploadArtifact"]
        assert isinstance(upload, grpc.aio.AioRpcError) and upload.code() != grpc.StatusCode.UNAUTHENTICATED

        messages = set()
        for case, token in WRONG.items():
            async with _channel(store.address, token) as channel:
                refused = await _calls(pb_grpc.JobStoreStub(channel), job.id)
            for method, answer in refused.items():
                assert isinstance(answer, grpc.aio.AioRpcError), (case, method, answer)
                assert answer.code() == grpc.StatusCode.UNAUTHENTICATED, (case, method, answer)
                messages.add(answer.details())
        [message] = messages  # one message, whatever was wrong
        assert message is not None
        assert TOKEN_ENV in message and "\n" not in message and GRPC_TOKEN not in message

        # Nothing refused was done: the one job is the one enqueued with the secret.
        async with jobstore_channel(store.address, GRPC_TOKEN) as channel:
            listed = await pb_grpc.JobStoreStub(channel).ListJobs(pb.ListJobsRequest(user_id="u"))
        assert len(listed.jobs) == 2  # the first one and the allowed Enqueue above

        # Health and reflection answer without a secret.
        async with grpc.aio.insecure_channel(store.address) as channel:
            # typeshed's HealthStub and ServerReflectionStub declare none of their methods.
            health = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(  # type: ignore[arg-type, operator]
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            services = {s.name async for reply in reflection for s in reply.list_services_response.service}
        assert "docjobs.v1.JobStore" in services
    finally:
        store.kill()


@pytest.mark.parametrize(("token", "says"), [
    (None, f"{TOKEN_ENV} is required"),
    ("", f"{TOKEN_ENV} is required"),
    ("x" * 31, f"{TOKEN_ENV} must be at least 32 bytes, got 31"),
    (new_token() + "\n", f"{TOKEN_ENV} must be printable ASCII"),
], ids=["unset", "empty", "short", "newline"])  # a random token in an id would differ between workers
def test_a_jobstore_without_the_secret_refuses_to_start(token: str | None, says: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env["DATABASE_URL"] = "postgresql://127.0.0.1:1/x"
    if token is not None:
        env[TOKEN_ENV] = token
    result = subprocess.run([sys.executable, "-m", "jobstore.server"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jobstore: {says}"), result.stderr


@pytest.mark.parametrize("service", ["renderer.worker", "gateway.app"])
def test_a_caller_without_the_secret_refuses_to_start(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, "DATABASE_URL")}
    env.update(DOCJOBS_AUTH="none", DOCJOBS_JOBSTORE_ADDRESS="127.0.0.1:1")
    result = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{TOKEN_ENV} is required" in lines[0], result.stderr


def test_docjobs_up_makes_a_secret_per_run_and_hands_it_to_every_service(tmp_path: Path, database_url: str) -> None:
    stack = StackProcess(tmp_path / "up.log", database_url, DOCJOBS_RENDERERS="1")
    stack.env.pop(TOKEN_ENV)  # as from a shell that never heard of it
    stack.start()
    try:
        stack.wait_up()
        # The gateway and the renderer have it: a job goes all the way through.
        request = urllib.request.Request(f"{stack.base}/api/jobs", method="POST", headers={
            "Content-Type": "application/json"}, data=json.dumps(example("pdf")).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            created = json.loads(response.read())

        def status() -> str:
            with urllib.request.urlopen(f"{stack.base}{created['statusUrl']}", timeout=10) as response:
                return str(json.loads(response.read())["status"])

        wait_for(lambda: status() == "completed", "the job completed", timeout=120, log=lambda: stack.log)
        # A secret of its own: this test run's is refused; health stays open.
        address = f"127.0.0.1:{stack.grpc_port}"

        with jobstore_channel_blocking(address, GRPC_TOKEN) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.JobStoreStub(channel).GetStats(pb.GetStatsRequest(), timeout=10)
            health = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        jobstore = stack.service("jobstore")
        assert jobstore is not None
        secret = jobstore.environ()[TOKEN_ENV]
        assert len(secret) >= 32 and secret != GRPC_TOKEN
        gateway, renderer = stack.service("gateway"), stack.service("renderer-1")
        assert gateway is not None and renderer is not None
        assert gateway.environ()[TOKEN_ENV] == renderer.environ()[TOKEN_ENV] == secret
        assert secret not in stack.log  # never logged
        assert stack.stop() == 0, stack.log
    finally:
        stack.kill_tree()


async def test_a_gateway_with_a_wrong_secret_answers_502_and_never_reaches_the_service(jobstore) -> None:
    """A deployment whose gateway holds another secret: its readiness probe still passes (health is open),
    but a request gets 502, not a 500 or a hang, and nothing is enqueued."""
    gateway = await start_gateway(jobstore.address, grpc_token=new_token())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(gateway.base + "/readyz") as r:
                assert r.status == 200
            async with http.post(gateway.base + "/api/jobs", json=example("pdf"), headers=bearer("u")) as r:
                assert r.status == 502, await r.text()
                assert (await r.json())["error"]["code"] == "upstream_error"
        stats = await jobstore.stub.GetStats(pb.GetStatsRequest())
        assert sum(row.count for row in stats.counts) == 0
    finally:
        await gateway.stop()
