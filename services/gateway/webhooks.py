"""The webhook sender: POSTs each job's end to its webhookUrl, signed per Standard Webhooks (docs/gateway.md).

It lives in the gateway because the gateway has an HTTP client and renders jobs as GET /api/jobs/{id} does
(the event's "data"); the jobstore, which stores the deliveries, imports neither. Every gateway replica runs
one; they share the work through the jobstore's leases (ClaimDeliveries), so a delivery is sent by one
sender at a time, and one that a sender took and never reported (it was killed mid-send) is claimed again
when its lease ends. Nothing is kept here between attempts: a restarted gateway loses nothing.

Addresses: the name in a URL is resolved at every send by the connector's resolver below, which refuses a
non-public address unless the host is listed in DOCJOBS_WEBHOOK_ALLOW; the connection is made to the
addresses it passed, so a name that rebinds to 127.0.0.1 after its check is refused, not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from prometheus_client import CollectorRegistry, Counter
from standardwebhooks import Webhook

from docjobs import webhooks
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from . import payloads
from .auth import Auth
from .errors import ApiError
from .settings import Settings

log = logging.getLogger("gateway.webhooks")

SEND_TIMEOUT_S = 10.0
LEASE_MS = int((SEND_TIMEOUT_S + 20.0) * 1000)  # a send, its job's rendering and its report fit well within
RETRY_CAP_MS = 600_000.0
POLL_S = 1.0
CONCURRENCY = 16
RESOLVE_TIMEOUT_S = 5.0
USER_AGENT = "docjobs-webhooks/1"
RESPONSE_READ_BYTES = 64 * 1024
OUTCOME_NAMES = {pb.DELIVERY_OUTCOME_DELIVERED: "delivered", pb.DELIVERY_OUTCOME_RETRY: "retry",
                 pb.DELIVERY_OUTCOME_GAVE_UP: "gave_up"}


class Refused(OSError):
    """An address the webhook may not reach; aiohttp reports it as a connection error."""


class CheckedResolver(AbstractResolver):
    """Resolves a webhook's host and gives aiohttp only addresses the policy allows (all of them must be)."""

    def __init__(self, allow: tuple[tuple[str, int | None], ...]) -> None:
        self._allow = allow
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        target = webhooks.Target(host=host.lower().rstrip("."), port=port, https=False)
        try:
            free = webhooks.check_target(target, self._allow)
        except webhooks.WebhookUrlError as exc:
            raise Refused(str(exc)) from None
        results = await self._resolver.resolve(host, port, family)
        if not free:
            for result in results:
                try:
                    webhooks.check_address(target, ipaddress.ip_address(result["host"]))
                except webhooks.WebhookUrlError as exc:
                    raise Refused(str(exc)) from None
        return results

    async def close(self) -> None:
        await self._resolver.close()


async def check_url(url: str, allow: tuple[tuple[str, int | None], ...]) -> None:
    """At POST: the URL's host is listed, or it names (or resolves to) public addresses only. ApiError 422
    naming webhookUrl otherwise."""
    try:
        target = webhooks.parse_url(url)
        if webhooks.check_target(target, allow):
            return
        address = target.ip()
        if address is not None:
            webhooks.check_address(target, address)
            return
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port,
                                                                     type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise webhooks.WebhookUrlError(f"{target.host} could not be resolved ({exc})") from None
        for info in infos:
            webhooks.check_address(target, ipaddress.ip_address(info[4][0]))
    except webhooks.WebhookUrlError as exc:
        raise ApiError(422, "invalid", f"webhookUrl: {exc}", "webhookUrl") from None


def retry_delay_ms(attempt: int, base_ms: float, jitter: float) -> float:
    """Exponential backoff from base_ms, capped at ten minutes, with jitter in [0.5, 1)."""
    return float(min(RETRY_CAP_MS, base_ms * 2.0 ** min(attempt - 1, 30)) * (0.5 + jitter / 2))


class WebhookSender:
    def __init__(self, stub: pb_grpc.JobStoreAsyncStub, auth: Auth, settings: Settings, *,
                 registry: CollectorRegistry | None = None, jitter: Callable[[], float] = random.random) -> None:
        self._stub = stub
        self._attempts = Counter("docjobs_gateway_webhook_attempts", "Webhook attempts by outcome: delivered, "
                                 "retry (to be tried again), gave_up (too old, or its job is gone)", ["outcome"],
                                 registry=registry)
        self._auth = auth
        self._settings = settings
        self._signer = Webhook(settings.webhook_secret)
        self._jitter = jitter
        self._id = f"gateway-{uuid.uuid4().hex[:12]}"
        self._stopping = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=CheckedResolver(self._settings.webhook_allow), use_dns_cache=False,
                                         force_close=True)
        # No proxies from the environment (trust_env is off): the address checked is the one connected to.
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S))
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        """Claim nothing more; sends under way get their timeout to finish, then are abandoned (their
        leases end and another sender, or this one restarted, tries again)."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sends:
            _, pending = await asyncio.wait(self._sends, timeout=SEND_TIMEOUT_S + 1)
            for task in pending:
                task.cancel()
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            claimed = 0
            try:
                free = CONCURRENCY - len(self._sends)
                if free > 0:
                    reply = await self._stub.ClaimDeliveries(pb.ClaimDeliveriesRequest(
                        sender_id=self._id, max=free, lease_ms=LEASE_MS), timeout=10)
                    for delivery in reply.deliveries:
                        task = asyncio.create_task(self._send(delivery), name=f"webhook-{delivery.id}")
                        self._sends.add(task)
                        task.add_done_callback(self._sent)
                    claimed = len(reply.deliveries)
            except grpc.aio.AioRpcError as exc:
                log.warning("claiming webhook deliveries: %s %s", exc.code().name, exc.details())
            if claimed and len(self._sends) < CONCURRENCY:
                continue  # there may be more due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._stopping.wait()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)

    async def _send(self, delivery: pb.Delivery) -> None:
        status, error = 0, ""
        try:
            body = await self._body(delivery)
            status, error = await self._post(delivery, body)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                error = "the job no longer exists"  # retention removed it: nothing left to tell
                await self._report(delivery, pb.DELIVERY_OUTCOME_GAVE_UP, 0, error, 0)
                return
            log.warning("webhook %s: reading job %s: %s", delivery.id, delivery.job_id, exc.code().name)
            return  # the lease ends and the delivery is claimed again
        except Exception as exc:  # never lose the report to an unexpected error: it is retried like any
            log.exception("webhook %s: unexpected error", delivery.id)
            error = f"internal error: {type(exc).__name__}"
        if 200 <= status < 300:
            await self._report(delivery, pb.DELIVERY_OUTCOME_DELIVERED, status, "", 0)
            return
        delay_ms = retry_delay_ms(delivery.attempt, self._settings.webhook_retry_base_ms, self._jitter())
        age_ms = (datetime.now(UTC) - delivery.created_at.ToDatetime(tzinfo=UTC)).total_seconds() * 1000
        if age_ms + delay_ms > self._settings.webhook_max_age_s * 1000:
            log.warning("webhook %s for job %s: giving up after %d attempts (%s)", delivery.id, delivery.job_id,
                        delivery.attempt, error or status)
            await self._report(delivery, pb.DELIVERY_OUTCOME_GAVE_UP, status, error, 0)
        else:
            await self._report(delivery, pb.DELIVERY_OUTCOME_RETRY, status, error, int(delay_ms))

    async def _body(self, delivery: pb.Delivery) -> bytes:
        """{"type", "timestamp" (when the job ended), "data": the job as GET /api/jobs/{id} shows it}."""
        job, webhook = await asyncio.gather(
            self._stub.GetJob(pb.GetJobRequest(job_id=delivery.job_id, include_attempts=True), timeout=10),
            self._stub.GetJobWebhook(pb.GetJobWebhookRequest(job_id=delivery.job_id), timeout=10))
        links = payloads.job_links(job.id, self._auth.job_url_token(job.user_id, job.id))
        event: dict[str, Any] = {"type": delivery.event_type, "timestamp": delivery.created_at.ToJsonString(),
                                 "data": payloads.job_document(job, links, webhook)}
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()

    async def _post(self, delivery: pb.Delivery, body: bytes) -> tuple[int, str]:
        """(HTTP status, "") or (0, why there was no answer)."""
        assert self._session is not None
        try:
            target = webhooks.parse_url(delivery.url)
            # An address in the URL never reaches the resolver: it is checked here.
            if not webhooks.check_target(target, self._settings.webhook_allow) and target.ip() is not None:
                address = target.ip()
                assert address is not None
                webhooks.check_address(target, address)
        except webhooks.WebhookUrlError as exc:
            return 0, f"refused: {exc}"[:500]
        now = datetime.now(UTC)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "webhook-id": delivery.id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self._signer.sign(delivery.id, now, body.decode())}
        try:
            async with self._session.post(delivery.url, data=body, headers=headers, allow_redirects=False) as reply:
                # Only the status counts: a receiver's body is not read past a little (it could be endless).
                await reply.content.read(RESPONSE_READ_BYTES)
                return reply.status, "" if 200 <= reply.status < 300 else f"HTTP {reply.status}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, Refused):
                return 0, f"refused: {exc.os_error}"[:500]
            return 0, f"could not connect: {exc.os_error}"[:500]
        except TimeoutError:
            return 0, f"no answer within {SEND_TIMEOUT_S:g} s"
        except aiohttp.ClientError as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:500]

    async def _report(self, delivery: pb.Delivery, outcome: pb.DeliveryOutcome, status: int, error: str,
                      retry_ms: int) -> None:
        self._attempts.labels(OUTCOME_NAMES[outcome]).inc()
        try:
            await self._stub.ReportDelivery(pb.ReportDeliveryRequest(
                delivery_id=delivery.id, lease_token=delivery.lease_token, outcome=outcome, status_code=status,
                error=error[:500], retry_ms=retry_ms), timeout=10)
        except grpc.aio.AioRpcError as exc:
            # Its lease ends and it is sent again: at least once, and the receiver knows it by webhook-id.
            log.warning("webhook %s: report not recorded: %s %s", delivery.id, exc.code().name, exc.details())
