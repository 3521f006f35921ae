"""Registering the servicer so that a request that is not a valid protobuf message of its method gets
INVALID_ARGUMENT with a message, like any other bad input (grpc's own handlers answer INTERNAL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

import grpc

from docjobs.v1 import jobstore_pb2_grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class MalformedRequest:
    """Stands in for a request whose bytes did not parse; the servicer refuses it (see `require_parsed`)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # protobuf's DecodeError, and whatever a truncated buffer raises
            return MalformedRequest(exc)

    return deserialize


class _Collect:
    """Takes the method handlers the generated code would register on a server."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self.service, self.handlers = service, handlers


def _lenient_handler(handler: Handler) -> Handler:
    parse = handler.request_deserializer
    if parse is None:  # the method takes the bytes as they came: nothing to parse
        return handler
    # grpc's handlers are namedtuples; the stubs declare only their fields.
    lenient: Handler = handler._replace(request_deserializer=_lenient(parse))  # type: ignore[attr-defined]
    return lenient


def add_servicer(servicer: jobstore_pb2_grpc.JobStoreServicer, server: grpc.aio.Server) -> None:
    collected = _Collect()
    # The generated function calls only the server's two registration methods, which _Collect has.
    jobstore_pb2_grpc.add_JobStoreServicer_to_server(servicer, cast(grpc.aio.Server, collected))
    handlers = {name: _lenient_handler(handler) for name, handler in collected.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)
