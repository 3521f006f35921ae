"""Only callers that present the shared secret reach the JobStore service.

Every call must carry the metadata `authorization: Bearer <DOCJOBS_GRPC_TOKEN>` (docjobs.channels adds
it for every caller of ours); anything else ends UNAUTHENTICATED before the servicer sees it, with one
message whatever was wrong, so a caller learns nothing about the secret. The health service and
reflection stay open: probes and grpcurl's discovery carry no secret and reveal nothing of the jobs.

The cost on an accepted call is one dict built from the call's few metadata entries and one
hmac.compare_digest; nothing is logged per call.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter

from docjobs.channels import AUTHORIZATION, MIN_TOKEN_BYTES, TOKEN_ENV

from .metrics import REGISTRY

log = logging.getLogger(__name__)

OPEN_METHODS = tuple(f"/{name}/" for name in (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                              reflection.SERVICE_NAME))
REFUSED_MESSAGE = f"unauthenticated: this jobstore needs the metadata `authorization: Bearer <{TOKEN_ENV}>`"
REFUSED = Counter("docjobs_jobstore_unauthenticated_calls",
                  f"Calls refused for a missing or wrong {TOKEN_ENV}", registry=REGISTRY)
LOG_EVERY_S = 60.0  # a caller without the secret retries in a loop: one line a minute says it


async def _refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED_MESSAGE)


# One refusing handler per kind of call (a handler's kind must match the method's); none of them reads
# or parses the request.
_REFUSALS: dict[tuple[bool, bool], grpc.RpcMethodHandler[Any, Any]] = {
    (False, False): grpc.unary_unary_rpc_method_handler(_refuse),
    (False, True): grpc.unary_stream_rpc_method_handler(_refuse),
    (True, False): grpc.stream_unary_rpc_method_handler(_refuse),
    (True, True): grpc.stream_stream_rpc_method_handler(_refuse),
}


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """The server's one interceptor: lets through the calls that present the secret."""

    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        if len(token) < MIN_TOKEN_BYTES:  # Settings.from_env says so first; this guards other constructions
            raise ValueError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_BYTES} bytes")
        self._expected = token.encode()
        self._clock = clock
        self._refused_since_log = 0
        self._logged_at: float | None = None

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        if self._presented(handler_call_details.invocation_metadata) or \
                handler_call_details.method.startswith(OPEN_METHODS):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # no such method: UNIMPLEMENTED, as for anyone
        self._note_refusal()
        return _REFUSALS[(bool(handler.request_streaming), bool(handler.response_streaming))]

    def _presented(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        value = dict(metadata or ()).get(AUTHORIZATION)
        if not isinstance(value, str):
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 7235), the token is not
            return False
        try:
            return hmac.compare_digest(token.encode(), self._expected)
        except UnicodeEncodeError:
            return False

    def _note_refusal(self) -> None:
        REFUSED.inc()
        self._refused_since_log += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            log.warning("refused %d call(s) without the right %s (UNAUTHENTICATED)", self._refused_since_log,
                        TOKEN_ENV)
            self._refused_since_log = 0
            self._logged_at = now
