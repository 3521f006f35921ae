"""Webhook deliveries: the jobstore's side (docs/gateway.md, "Webhooks"; migration 0005).

The jobstore stores and leases deliveries but sends none: sending is an HTTP client's work, which the
jobstore does not import (pyproject.toml's import contracts), so a sender in another process (the
gateway's, gateway/webhooks.py) claims due deliveries, POSTs them and reports each attempt here. A delivery
row is written by a trigger with the job's terminal event, in the transaction that ends the job; these
are the calls that read and move it. Leases work as a job's do: a claim moves the delivery's next attempt a
lease ahead and gives it a fresh token, so two senders never hold one delivery at once, one killed
mid-send lets it be claimed again when the lease ends, and a late report under a stale token is refused.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.webhooks import WebhookUrlError, parse_url

from .clock import Clock
from .convert import timestamp
from .errors import FailedPrecondition, InvalidArgument
from .queries import Q

MAX_CLAIM = 100
MAX_RETRY_MS = 86_400_000
MAX_ERROR_CHARS = 500
OUTCOMES = {pb.DELIVERY_OUTCOME_DELIVERED: "delivered", pb.DELIVERY_OUTCOME_RETRY: "retry",
            pb.DELIVERY_OUTCOME_GAVE_UP: "failed"}


def webhook_url(value: str) -> str | None:
    """Enqueue's webhook_url: "" for none, else an absolute http(s) URL (its addresses are the gateway's
    to judge)."""
    if not value:
        return None
    try:
        parse_url(value)
    except WebhookUrlError as exc:
        raise InvalidArgument("webhook_url", str(exc)) from None
    return value


class Deliveries:
    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def claim(self, request: pb.ClaimDeliveriesRequest) -> pb.ClaimDeliveriesResponse:
        if not request.sender_id.strip() or len(request.sender_id) > 200:
            raise InvalidArgument("sender_id", "required, at most 200 characters")
        max_count = request.max or 10
        if not 1 <= max_count <= MAX_CLAIM:
            raise InvalidArgument("max", f"must be between 1 and {MAX_CLAIM}")
        if not 1000 <= request.lease_ms <= 3_600_000:
            raise InvalidArgument("lease_ms", "must be between 1000 and 3600000")
        rows = await self._pool.fetch(Q.claim_deliveries, max_count, request.lease_ms, self._clock.sql_now())
        response = pb.ClaimDeliveriesResponse()
        for row in rows:
            response.deliveries.append(pb.Delivery(
                id=str(row["id"]), job_id=str(row["job_id"]), event_id=row["event_id"],
                event_type=row["event_type"], url=row["url"], attempt=row["attempts"],
                lease_token=str(row["lease_token"]), created_at=timestamp(row["created_at"])))
        return response

    async def report(self, request: pb.ReportDeliveryRequest) -> pb.ReportDeliveryResponse:
        delivery_id = _uuid(request.delivery_id, "delivery_id")
        token = _uuid(request.lease_token, "lease_token")
        outcome = OUTCOMES.get(request.outcome)
        if outcome is None:
            raise InvalidArgument("outcome", "required: DELIVERED, RETRY or GAVE_UP")
        if not 0 <= request.status_code <= 999:
            raise InvalidArgument("status_code", "must be an HTTP status (100..999) or 0")
        if len(request.error) > MAX_ERROR_CHARS:
            raise InvalidArgument("error", f"longer than {MAX_ERROR_CHARS} characters")
        if not 0 <= request.retry_ms <= MAX_RETRY_MS:
            raise InvalidArgument("retry_ms", f"must be between 0 and {MAX_RETRY_MS}")
        state = await self._pool.fetchval(
            Q.report_delivery, delivery_id, token, outcome, request.status_code or None, request.error,
            request.retry_ms, self._clock.sql_now())
        if state is None:
            raise FailedPrecondition(f"delivery {delivery_id} is not leased under this token (its lease ended, "
                                     "or it was reported already)")
        return pb.ReportDeliveryResponse()

    async def job_webhook(self, request: pb.GetJobWebhookRequest) -> pb.JobWebhook:
        job_id = _uuid(request.job_id, "job_id")
        rows = await self._pool.fetch(Q.job_webhook, job_id, request.user_id or None)
        out = pb.JobWebhook()
        for row in rows:
            out.url = row["url"]
            if row["id"] is None:
                continue
            delivery = out.deliveries.add(
                id=str(row["id"]), event_id=row["event_id"], event_type=row["event_type"], state=row["state"],
                created_at=timestamp(row["created_at"]), finished_at=timestamp(row["finished_at"]))
            if row["state"] == "pending":
                delivery.next_attempt_at.FromDatetime(row["next_attempt_at"])
            for entry in json.loads(row["attempt_log"]):
                delivery.attempts.append(_attempt(entry))
        return out


def _attempt(entry: dict[str, Any]) -> pb.DeliveryAttempt:
    attempt = pb.DeliveryAttempt(attempt=int(entry.get("attempt") or 0), status_code=int(entry.get("status_code") or 0),
                                 error=str(entry.get("error") or ""))
    # jsonb renders timestamptz as ISO 8601 with an offset.
    attempt.at.FromDatetime(datetime.fromisoformat(entry["at"]))
    if entry.get("next_attempt_at"):
        attempt.next_attempt_at.FromDatetime(datetime.fromisoformat(entry["next_attempt_at"]))
    return attempt


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "required: a UUID") from None
