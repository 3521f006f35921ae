"""Every channel to the jobstore is opened here, and every one presents the shared secret.

The jobstore answers only callers that send `authorization: Bearer <DOCJOBS_GRPC_TOKEN>` (its interceptor,
jobstore/auth.py). The gateway, the renderers, the tests and the benchmarks open their channels with
`jobstore_channel`, whose interceptor adds that metadata to every call, so no call site can forget it.

An interceptor rather than call credentials: grpc attaches call credentials only to TLS (or local)
channels, and the jobstore is reached over plain HTTP/2 inside a private network (see docs/deploy.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

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


# The largest message the jobstore sends or takes (a job's payload may be 4 MiB, a small artifact too), and
# what its clients take by default (grpc's own default is 4 MiB, less than one job at its largest).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_MESSAGE_OPTIONS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))


def _with_message_sizes(options: ChannelOptions) -> list[tuple[str, Any]]:
    given = {name for name, _ in options}
    return [*options, *(option for option in _MESSAGE_OPTIONS if option[0] not in given)]


def jobstore_channel(address: str, token: str, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to the jobstore whose every call carries the shared secret, and which takes the
    largest message the jobstore sends (unless options say otherwise)."""
    channel = grpc.aio.insecure_channel(address, options=_with_message_sizes(options))
    return cast(grpc.aio.Channel, _BearerChannel(channel, token))


class _BearerChannel:
    """A grpc.aio channel whose call objects (what a stub holds per method) add the secret to each call's
    metadata. Cheaper than a client interceptor, which grpc.aio runs through its interceptor machinery
    on every call: about 0.1 ms of the caller's CPU per call, a tenth of a benchmark worker's budget."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._entry = bearer(token)

    def __getattr__(self, name: str) -> Any:  # close, channel_ready, get_state, ...: the channel's own
        return getattr(self._channel, name)

    async def __aenter__(self) -> _BearerChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _WithBearer(self._channel.unary_unary(*args, **kwargs), self._entry)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _WithBearer(self._channel.unary_stream(*args, **kwargs), self._entry)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _WithBearer(self._channel.stream_unary(*args, **kwargs), self._entry)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _WithBearer(self._channel.stream_stream(*args, **kwargs), self._entry)


class _WithBearer:
    """One method's call object, with the secret added to the metadata of every call made through it."""

    __slots__ = ("_call", "_entry")

    def __init__(self, call: Any, entry: tuple[str, str]) -> None:
        self._call = call
        self._entry = entry

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call(request, metadata=(*metadata, self._entry) if metadata else (self._entry,), **kwargs)


def jobstore_channel_blocking(address: str, token: str, options: ChannelOptions = ()) -> grpc.Channel:
    """The same for grpc's blocking API (tests that drive a stack from a thread of their own)."""
    return grpc.intercept_channel(grpc.insecure_channel(address, options=_with_message_sizes(options)),
                                  _BlockingBearer(token))


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

