"""HTTP errors as JSON, mapped in one place: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "conflict"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (413, "too_large"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, object] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response({"error": body}, status=status, dumps=json.dumps)


def from_grpc(exc: grpc.aio.AioRpcError) -> ApiError:
    status, code = GRPC_TO_HTTP.get(exc.code(), (502, "upstream_error"))
    field = None
    for key, value in exc.trailing_metadata() or ():
        if key == "docjobs-field":
            field = str(value)
    message = exc.details() or exc.code().name
    if status == 503:
        message = "the job service is unavailable; try again"
    return ApiError(status, code, message, field)


CLIENT_CLOSED_REQUEST = 499


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except grpc.aio.AioRpcError as exc:
        err = from_grpc(exc)
        return error_response(err.status, err.code, err.message, err.field)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", "the request body is too large", "body")
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # aiohttp could not read the body (a Content-Encoding it is not in, a broken chunked encoding).
        # The rest of the connection cannot be read either: it closes after this answer.
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
        reason = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
        response = error_response(400, "malformed", f"the body could not be read: {reason}", "body")
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except ConnectionResetError:
        # The client went away while its answer was being written (aiohttp's ClientConnectionResetError):
        # nothing is wrong here and nobody is left to answer. 499 is what the access log shows for it
        # (nginx's "client closed request"), not a 500 with a traceback.
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")
