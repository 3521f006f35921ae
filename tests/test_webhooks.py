"""Webhooks: a job's end is POSTed to its webhookUrl, signed per Standard Webhooks, retried until it lands,
across restarts of the sender, to allowed addresses only (docs/gateway.md, "Webhooks").

A real receiver (aiohttp on loopback) takes the POSTs; the signature is checked with the standardwebhooks
library, as a receiver would; jobs end through the real jobstore's Claim, Complete and Fail.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from jobstore.clock import ManualClock

from .conftest import GRPC_TOKEN, RunningJobStore, new_user, wait_until
from .gateway_client import SECRET, bearer, start_gateway
from .helpers import claim, enqueue, scrape
from .processes import GatewayProcess

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"docjobs-webhook-test-secret-32by").decode()
SPEC = {"sheets": [{"name": "S", "columns": [{"header": "a"}], "rows": [["x"]]}]}


def service_headers() -> dict[str, str]:
    token = jwt.encode({"sub": "chat-backend", "exp": int(time.time()) + 600, "scope": "docjobs:service"}, SECRET,
                       algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


class Receiver:
    """An HTTP endpoint on loopback that records every POST; it answers `status` (200 by default)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.endless = False  # answer with a body that never ends
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        self.received.append((dict(request.headers), await request.read()))
        if not self.endless:
            return web.Response(status=self.status)
        response = web.StreamResponse(status=self.status)
        await response.prepare(request)
        while True:  # until the sender hangs up
            await response.write(b"x" * 65536)

    async def start(self) -> Receiver:
        app = web.Application()
        app.add_routes([web.post("/hook", self._hook)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def events(self) -> list[dict[str, Any]]:
        """Every POST's body, after checking its signature as a receiver would."""
        verifier = Webhook(WEBHOOK_SECRET)
        return [verifier.verify(body, headers) for headers, body in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.stop()


def webhook_settings(*allowed: int, **overrides: Any) -> dict[str, Any]:
    return {"webhook_secret": WEBHOOK_SECRET, "webhook_allow": tuple(("127.0.0.1", port) for port in allowed),
            "webhook_retry_base_ms": 200.0, **overrides}


async def post_job(http: aiohttp.ClientSession, base: str, webhook_url: str, headers: dict[str, str] | None = None,
                   ) -> tuple[int, dict[str, Any]]:
    body = {"documentType": "spreadsheet", "spec": SPEC, "userId": new_user(), "webhookUrl": webhook_url}
    async with http.post(f"{base}/api/jobs", json=body, headers=headers or service_headers()) as response:
        return response.status, await response.json()


async def finish(stub, job_id: str, *, fail: bool = False) -> None:
    """End the job as a worker would: claim it, then complete it or fail it for good."""
    claimed = await wait_until(lambda: claim(stub), timeout=10)
    assert claimed[0].job.id == job_id
    if fail:
        await stub.Fail(pb.FailRequest(job_id=job_id, lease_token=claimed[0].lease_token, error_code="render_error",
                                       error_message="the spec could not be rendered", retryable=False))
    else:
        await stub.Complete(pb.CompleteRequest(job_id=job_id, lease_token=claimed[0].lease_token,
                                               result_json=json.dumps({"filename": "a.xlsx"})))


async def job_document(http: aiohttp.ClientSession, base: str, job_id: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/jobs/{job_id}", headers=service_headers()) as response:
        assert response.status == 200, await response.text()
        document: dict[str, Any] = await response.json()
        return document


async def test_completed_and_failed_jobs_post_signed_events(jobstore: RunningJobStore, receiver: Receiver, http):
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        status, created = await post_job(http, gateway.base, receiver.url)
        assert status == 202, created
        await finish(jobstore.stub, created["jobId"])
        await wait_until(lambda: receiver.received, timeout=15)
        [event] = receiver.events()  # verified: the signature is Standard Webhooks' over id.timestamp.body
        assert event["type"] == "job.completed"
        assert event["data"]["jobId"] == created["jobId"] and event["data"]["status"] == "completed"
        assert event["data"]["result"]["filename"] == "a.xlsx"
        headers = receiver.received[0][0]
        assert headers["webhook-signature"].startswith("v1,") and headers["webhook-id"]
        # The spec's computation, not the signing library's: base64 HMAC-SHA256, keyed with the secret's
        # bytes after whsec_, of "id.timestamp.body"; the timestamp is the send's, in seconds.
        key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + receiver.received[0][1]
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert f"v1,{expected}" in headers["webhook-signature"].split(" ")
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60

        async def delivered() -> dict[str, Any] | None:
            document = await job_document(http, gateway.base, created["jobId"])
            deliveries = document["webhook"]["deliveries"]
            return document if deliveries and deliveries[0]["state"] == "delivered" else None

        document = await wait_until(delivered, timeout=10)
        assert document["webhook"]["url"] == receiver.url
        # The event's data is the job as GET /api/jobs/{id} shows it (then: its webhook's delivery was pending).
        assert set(event["data"]) == set(document)
        assert event["data"]["attemptHistory"] == document["attemptHistory"]
        assert event["data"]["webhook"]["deliveries"][0]["state"] == "pending"
        [delivery] = document["webhook"]["deliveries"]
        assert delivery["id"] == headers["webhook-id"] and delivery["type"] == "job.completed"
        assert delivery["attempts"][0]["statusCode"] == 200 and delivery["attempts"][0]["nextAttemptAt"] is None
        metrics = await scrape(f"{gateway.base}/metrics")
        assert metrics[("docjobs_gateway_webhook_attempts_total", (("outcome", "delivered"),))] == 1

        # A job that fails says so too (others' callbacks are often never called on error).
        status, created = await post_job(http, gateway.base, receiver.url)
        assert status == 202, created
        await finish(jobstore.stub, created["jobId"], fail=True)
        await wait_until(lambda: len(receiver.received) == 2, timeout=15)
        failed = receiver.events()[1]
        assert failed["type"] == "job.failed" and failed["data"]["status"] == "failed"
        assert failed["data"]["error"]["code"] == "render_error"
    finally:
        await gateway.stop()


async def test_a_receiver_down_for_ten_seconds_still_receives(jobstore: RunningJobStore, http):
    receiver = Receiver()  # its port is known, nothing listens yet
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        status, created = await post_job(http, gateway.base, receiver.url)
        assert status == 202, created
        await finish(jobstore.stub, created["jobId"])
        loop = asyncio.get_running_loop()
        ended = loop.time()

        async def failed_attempts() -> list[dict[str, Any]]:
            document = await job_document(http, gateway.base, created["jobId"])
            deliveries = document["webhook"]["deliveries"]
            return deliveries[0]["attempts"] if deliveries else []

        async def down_for_ten_seconds() -> bool:
            return loop.time() - ended >= 10 and len(await failed_attempts()) >= 2

        await wait_until(down_for_ten_seconds, timeout=30, interval=0.2)
        attempts = await failed_attempts()
        assert all(a["statusCode"] is None and "connect" in a["error"] for a in attempts), attempts
        assert attempts[-1]["nextAttemptAt"] is not None
        await receiver.start()
        try:
            await wait_until(lambda: receiver.received, timeout=30)
            assert [e["type"] for e in receiver.events()] == ["job.completed"]
        finally:
            await receiver.stop()
    finally:
        await gateway.stop()


async def test_a_sender_killed_between_attempts_loses_nothing(jobstore: RunningJobStore, http, tmp_path: Path):
    receiver = Receiver()
    env = {"DOCJOBS_GRPC_TOKEN": GRPC_TOKEN, "DOCJOBS_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "DOCJOBS_WEBHOOK_ALLOW": f"127.0.0.1:{receiver.port}", "DOCJOBS_WEBHOOK_RETRY_BASE_MS": "300"}
    gateway = GatewayProcess(jobstore.address, tmp_path / "gateway.log", None, **env).start()
    try:
        await asyncio.to_thread(gateway.wait_ready)
        status, first = await post_job(http, gateway.base, receiver.url)
        assert status == 202, first
        await finish(jobstore.stub, first["jobId"])

        async def attempts(job_id: str) -> int:
            webhook = await jobstore.stub.GetJobWebhook(pb.GetJobWebhookRequest(job_id=job_id))
            return len(webhook.deliveries[0].attempts) if webhook.deliveries else 0

        await wait_until(lambda: attempts(first["jobId"]), timeout=15)
        gateway.kill()  # between attempts: the delivery waits in Postgres, nothing of it is in the sender
        # A job that ends while no sender runs is not lost either.
        second = await enqueue(jobstore.stub, user_id=new_user(), webhook_url=receiver.url)
        await finish(jobstore.stub, second.id, fail=True)
        await receiver.start()
        gateway.start()
        await wait_until(lambda: len(receiver.received) >= 2, timeout=30)
        events = receiver.events()
        assert sorted((e["data"]["jobId"], e["type"]) for e in events) == sorted(
            [(first["jobId"], "job.completed"), (second.id, "job.failed")])
    finally:
        gateway.stop()
        await receiver.stop()


REFUSED = [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/hook", "http://0.0.0.0/hook",
    "http://224.0.0.1/hook", "http://[::ffff:127.0.0.1]/hook", "ftp://example.com/hook", "http://u:p@example.com/",
    # 127.0.0.1 in the forms inet_aton also reads (a name to Python's ipaddress, an address to the resolver).
    "http://2130706433/hook", "http://0x7f.1/hook", "http://[fe80::1%25eth0]/hook",
]


async def test_a_refused_address_is_a_422_at_post(jobstore: RunningJobStore, http):
    gateway = await start_gateway(jobstore.address, **webhook_settings())
    try:
        for url in REFUSED:
            status, body = await post_job(http, gateway.base, url)
            assert status == 422 and body["error"]["field"] == "webhookUrl", (url, body)
        stats = await jobstore.stub.GetStats(pb.GetStatsRequest())
        assert not stats.counts  # nothing enqueued
    finally:
        await gateway.stop()


async def test_an_allow_list_admits_only_its_hosts(jobstore: RunningJobStore, receiver: Receiver, http):
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        for url in ("http://93.184.215.14/hook", f"http://127.0.0.1:{receiver.port + 1}/hook"):
            status, body = await post_job(http, gateway.base, url)
            assert status == 422 and body["error"]["field"] == "webhookUrl", body
        status, body = await post_job(http, gateway.base, receiver.url)
        assert status == 202, body
    finally:
        await gateway.stop()


async def test_only_a_service_names_a_webhook(jobstore: RunningJobStore, receiver: Receiver, http):
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        user = new_user()
        body = {"documentType": "spreadsheet", "spec": SPEC, "webhookUrl": receiver.url}
        async with http.post(f"{gateway.base}/api/jobs", json=body, headers=bearer(user)) as response:
            assert response.status == 403
            assert (await response.json())["error"]["field"] == "webhookUrl"
        listed = await jobstore.stub.ListJobs(pb.ListJobsRequest(user_id=user))
        assert not listed.jobs  # nothing enqueued
    finally:
        await gateway.stop()
    # The local demo's user may (there is no other).
    local = await start_gateway(jobstore.address, auth="none", **webhook_settings(receiver.port))
    try:
        body = {"documentType": "spreadsheet", "spec": SPEC, "webhookUrl": receiver.url}
        async with http.post(f"{local.base}/api/jobs", json=body) as response:
            assert response.status == 202, await response.text()
    finally:
        await local.stop()


async def test_an_address_is_checked_again_at_send(jobstore: RunningJobStore, receiver: Receiver, http):
    """A name that resolves to loopback when the webhook is sent (here `localhost`, named through gRPC, which
    does not resolve it) is refused at the send: nothing reaches the receiver listening there."""
    gateway = await start_gateway(jobstore.address, **webhook_settings())
    try:
        job = await enqueue(jobstore.stub, user_id=new_user(), webhook_url=f"http://localhost:{receiver.port}/hook")
        await finish(jobstore.stub, job.id)

        async def attempt() -> pb.DeliveryAttempt | None:
            webhook = await jobstore.stub.GetJobWebhook(pb.GetJobWebhookRequest(job_id=job.id))
            return webhook.deliveries[0].attempts[0] if webhook.deliveries and webhook.deliveries[0].attempts else None

        first = await wait_until(attempt, timeout=15)
        assert first.status_code == 0 and "refused" in first.error and "127.0.0.1" in first.error, first
        assert not receiver.received
    finally:
        await gateway.stop()


async def test_deliveries_are_leased_and_fenced(jobstore_factory, receiver: Receiver):
    """Two senders never hold one delivery at once; one that never reports lets it go when its lease ends,
    and its late report is refused. A delivery is kept per end of the job, not per job."""
    clock = ManualClock()
    store = await jobstore_factory(clock=clock)
    stub = store.stub
    job = await enqueue(stub, user_id=new_user(), webhook_url=receiver.url)
    plain = await enqueue(stub, user_id=new_user())
    for _ in range(2):
        [claimed] = await claim(stub)
        await stub.Complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token,
                                               result_json="{}"))
    clock.advance(timedelta(seconds=1))  # the delivery is due from the job's end, by the database's clock
    first = await stub.ClaimDeliveries(pb.ClaimDeliveriesRequest(sender_id="a", max=10, lease_ms=5000))
    [delivery] = first.deliveries  # the job without a webhook has none
    assert delivery.job_id == job.id and delivery.event_type == "job.completed" and delivery.attempt == 1
    assert not (await stub.ClaimDeliveries(pb.ClaimDeliveriesRequest(sender_id="b", max=10, lease_ms=5000))).deliveries
    clock.advance(timedelta(seconds=6))
    [again] = (await stub.ClaimDeliveries(pb.ClaimDeliveriesRequest(sender_id="b", max=10, lease_ms=5000))).deliveries
    assert again.id == delivery.id and again.attempt == 2 and again.lease_token != delivery.lease_token
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.ReportDelivery(pb.ReportDeliveryRequest(delivery_id=delivery.id, lease_token=delivery.lease_token,
                                                           outcome=pb.DELIVERY_OUTCOME_DELIVERED, status_code=200))
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.ReportDelivery(pb.ReportDeliveryRequest(delivery_id=again.id, lease_token=again.lease_token,
                                                       outcome=pb.DELIVERY_OUTCOME_DELIVERED, status_code=204))
    webhook = await stub.GetJobWebhook(pb.GetJobWebhookRequest(job_id=job.id))
    assert [d.state for d in webhook.deliveries] == ["delivered"]
    assert [a.status_code for a in webhook.deliveries[0].attempts] == [204]
    assert not (await stub.GetJobWebhook(pb.GetJobWebhookRequest(job_id=plain.id))).url
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await enqueue(stub, user_id=new_user(), webhook_url="file:///etc/passwd")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "webhook_url" in (bad.value.details() or "")


async def test_a_job_run_again_sends_again_at_its_new_end(jobstore: RunningJobStore, receiver: Receiver, http):
    """Deliveries are kept per end of the job, not per job: a failed job run again (Retry) that then completes
    sends job.completed too, under a webhook-id of its own."""
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        status, created = await post_job(http, gateway.base, receiver.url)
        assert status == 202, created
        await finish(jobstore.stub, created["jobId"], fail=True)
        await wait_until(lambda: receiver.received, timeout=15)
        await jobstore.stub.Retry(pb.RetryRequest(job_id=created["jobId"], reason="fixed"))
        await finish(jobstore.stub, created["jobId"])
        await wait_until(lambda: len(receiver.received) == 2, timeout=15)
        assert [e["type"] for e in receiver.events()] == ["job.failed", "job.completed"]
        first, second = (headers["webhook-id"] for headers, _ in receiver.received)
        assert first != second

        async def both_delivered() -> list[dict[str, Any]] | None:
            deliveries = (await job_document(http, gateway.base, created["jobId"]))["webhook"]["deliveries"]
            return deliveries if [d["state"] for d in deliveries] == ["delivered", "delivered"] else None

        deliveries = await wait_until(both_delivered, timeout=10)
        assert [d["id"] for d in deliveries] == [first, second]
    finally:
        await gateway.stop()


async def test_an_endless_answer_is_not_read_to_its_end(jobstore: RunningJobStore, receiver: Receiver, http):
    """Only the receiver's status counts: a body that never ends neither holds the sender nor fills its memory."""
    receiver.endless = True
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        status, created = await post_job(http, gateway.base, receiver.url)
        assert status == 202, created
        await finish(jobstore.stub, created["jobId"])

        async def state() -> str | None:
            deliveries = (await job_document(http, gateway.base, created["jobId"]))["webhook"]["deliveries"]
            return deliveries[0]["state"] if deliveries and deliveries[0]["attempts"] else None

        assert await wait_until(state, timeout=20) == "delivered"
    finally:
        await gateway.stop()


async def test_a_delivery_is_tried_once_then_given_up_after_the_max_age(jobstore: RunningJobStore, http):
    """Past DOCJOBS_WEBHOOK_MAX_AGE_S a delivery is given up (failed), but never before one attempt: a job that
    ended while no sender ran, longer ago than the max age, is still tried once."""
    receiver = Receiver()  # nothing listens
    status_code, created = 0, dict[str, Any]()
    first = await start_gateway(jobstore.address, **webhook_settings(receiver.port))
    try:
        status_code, created = await post_job(http, first.base, receiver.url)
    finally:
        await first.stop()
    assert status_code == 202, created
    await finish(jobstore.stub, created["jobId"])
    loop = asyncio.get_running_loop()
    ended = loop.time()
    await wait_until(lambda: loop.time() - ended > 1.5, timeout=5, interval=0.1)  # older than the max age
    gateway = await start_gateway(jobstore.address, **webhook_settings(receiver.port, webhook_max_age_s=1))
    try:
        async def given_up() -> dict[str, Any] | None:
            deliveries = (await job_document(http, gateway.base, created["jobId"]))["webhook"]["deliveries"]
            return deliveries[0] if deliveries and deliveries[0]["state"] != "pending" else None

        delivery = await wait_until(given_up, timeout=15)
        assert delivery["state"] == "failed" and delivery["finishedAt"] is not None
        [attempt] = delivery["attempts"]
        assert "connect" in attempt["error"] and attempt["nextAttemptAt"] is None
        metrics = await scrape(f"{gateway.base}/metrics")
        assert metrics[("docjobs_gateway_webhook_attempts_total", (("outcome", "gave_up"),))] == 1
    finally:
        await gateway.stop()
