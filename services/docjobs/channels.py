"""Every channel to the jobstore is opened here, and every one presents the shared secret.

The jobstore answers only callers that send `authorization: Bearer <DOCJOBS_GRPC_TOKEN>` (its interceptor,
jobstore/auth.py). The gateway, the renderers, the tests and the benchmarks open their channels with
`jobstore_channel`, whose interceptor adds that metadata to every call, so no call site can forget it.

An interceptor rather than call credentials: grpc attaches call credentials only to TLS (or local)
channels, and the jobstore is reached over plain HTTP/2 inside a private network (see docs/deploy.md).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import grpc
import grpc.aio

from .settings import SettingsError

TOKEN_ENV = "DOCJOBS_GRPC_TOKEN"
MIN_TOKEN_BYTES = 32
AUTHORIZATION = "authorization"  # gRPC metadata keys are lower case
ChannelOptions = Sequence[tuple[str, Any]]


def grpc_token(env: Mapping[str, str]) -> str:
    """DOCJOBS_GRPC_TOKEN, required by the jobstore and by every caller of it."""
    token = env.get(TOKEN_ENV, "")
    if not token:
        raise SettingsError(f"{TOKEN_ENV} is required: the shared secret every gRPC caller of the jobstore "
                            f"presents ({MIN_TOKEN_BYTES} bytes or more; `docjobs up` makes one per run)")
    # It travels as an HTTP/2 header value: printable ASCII, and a space or a newline (a file's last line
    # pasted into a Secret) would make two services disagree about it.
    if not all("!" <= c <= "~" for c in token):
        raise SettingsError(f"{TOKEN_ENV} must be printable ASCII with no spaces or newlines")
    if len(token) < MIN_TOKEN_BYTES:
        raise SettingsError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_BYTES} bytes, got {len(token)}")
    return token


def new_token() -> str:
    """A fresh secret (256 random bits, 43 URL-safe characters): `docjobs up` makes one per run."""
    return secrets.token_urlsafe(32)


def bearer(token: str) -> tuple[str, str]:
    """The metadata entry a caller presents."""
    return (AUTHORIZATION, f"Bearer {token}")


def jobstore_channel(address: str, token: str, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to the jobstore whose every call carries the shared secret."""
    interceptors = [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)


def jobstore_channel_blocking(address: str, token: str, options: ChannelOptions = ()) -> grpc.Channel:
    """The same for grpc's blocking API (tests that drive a stack from a thread of their own)."""
    return grpc.intercept_channel(grpc.insecure_channel(address, options=list(options)), _BlockingBearer(token))


class _Bearer:
    """Adds the secret to each call's metadata (one Metadata built per call: the whole cost)."""

    def __init__(self, token: str) -> None:
        self._entry = bearer(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                          grpc.aio.Metadata(*(details.metadata or ()), self._entry),
                                          details.credentials, details.wait_for_ready)


# grpc.aio files an interceptor under the first kind of call it is an instance of, so each kind needs an
# object of its own.
class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any,
                                    request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any,
                                     request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: Any,
                                     request_iterator: AsyncIterable[Any] | Iterable[Any]) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: Any,
                                      request_iterator: AsyncIterable[Any] | Iterable[Any]) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BlockingBearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._entry = bearer(token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details.method, details.timeout, (*(details.metadata or ()), self._entry),  # type: ignore[return-value]
                            details.credentials, getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request_iterator: Iterator[Any]) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                                request_iterator: Iterator[Any]) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

