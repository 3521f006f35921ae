"""What a browser must not be able to do to a gateway it did not mean to talk to.

Two holes a web page on any origin could use without a CORS preflight or a token:
- A "simple" cross-origin request (a form, or fetch with `Content-Type: text/plain`) is sent without a
  preflight, and its answer merely hidden from the page. A POST of a JSON body labelled text/plain would
  create a job. So a request body must be labelled `application/json`, which no simple request can be:
  anything else is a 415, before the body is read.
- DNS rebinding: a page on evil.example, whose name then resolves to 127.0.0.1, reads the local no-auth
  demo as its own origin (the browser sends `Host: evil.example`). With DOCJOBS_AUTH=none, where no token
  stands in the way, only loopback names in the Host header are served (421 otherwise). With tokens, a
  rebound page has no token to send, and a deployment's Host is its operator's to choose.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import ApiError, Handler, error_response

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
JSON_CHARSETS = frozenset({"", "utf-8", "utf8"})


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback interface (any port)."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal: "[::1]" or "[::1]:8080"
        name, bracket, port = host.partition("]")
        name, port = name + bracket, port.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    return name in LOOPBACK_HOSTS and (port == "" or (port.isascii() and port.isdigit() and len(port) <= 5))


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No-auth mode: a request whose Host is not a loopback name is refused before any route."""
    host = request.headers.get("Host", "")
    if not loopback_host(host):
        return error_response(421, "host_not_allowed", f"this gateway runs without authentication "
                              f"(DOCJOBS_AUTH=none) and answers only requests to 127.0.0.1, localhost or [::1], "
                              f"not to {host[:100]!r}", "Host")
    return await handler(request)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def writes_from_own_origins(listed: tuple[str, ...]) -> Any:
    """No-auth mode: a request that changes something (POST, DELETE, ...) sent by a web page must come from
    the gateway's own origin or a listed one (DOCJOBS_CORS_ORIGINS); 403 naming Origin otherwise. Without a
    token, a page on any site could otherwise retry or redrive jobs with a POST that has no body: a simple
    request, sent without a preflight (require_json sees no body to judge). Callers that are no browser
    send no Origin and are served as before."""
    allowed = frozenset(listed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (request.method not in SAFE_METHODS and origin is not None and origin not in allowed
                and origin != f"{request.scheme}://{request.host}"):
            return error_response(403, "forbidden", f"this gateway runs without authentication "
                                  f"(DOCJOBS_AUTH=none) and takes changes only from its own page or a listed "
                                  f"origin, not from {origin[:100]!r}", "Origin")
        return await handler(request)

    return middleware


def require_json(request: web.Request) -> None:
    """A request body must be JSON, and labelled so (`application/json`, UTF-8 if a charset is given)."""
    if request.content_type == "application/json" and (request.charset or "").lower() in JSON_CHARSETS:
        return
    sent = request.headers.get("Content-Type", "")
    shown = repr(sent[:100]) if sent else "none"
    raise ApiError(415, "unsupported_media_type", f"Content-Type: the body must be sent as application/json "
                   f"(got {shown})", "Content-Type")
