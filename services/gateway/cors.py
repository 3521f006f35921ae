"""Cross-origin requests (CORS) for the origins listed in DOCJOBS_CORS_ORIGINS, on every route.

A frontend served from its own origin (the default Ingress puts the gateway on a host of its own) can
then POST jobs, read them, follow their event streams and download their documents. The list holds exact
origins (`https://app.example.com`); empty, the gateway is same-origin only and sends no CORS header.

Why a middleware and a signal of our own rather than aiohttp-cors: the headers must reach every answer a
browser reads, and three kinds escape a per-route library. Event streams and downloads start their
response inside the handler (the signal `on_response_prepare` runs at that start, whoever starts it); the
JSON errors of the errors middleware and of aiohttp's own 404 and 405 are made outside any route's
handler (a browser cannot read a 401 or a 429 without them); and a preflight must be answered for every
path and method the router knows, which the router itself tells (the methods of the 405 it raises for an
OPTIONS), so a route added later needs nothing here. `Vary: Origin` goes on every answer, since each
depends on the Origin sent.

Unlisted origins get no CORS header at all, so the browser keeps the answer from the page; their
preflight gets a 403 JSON error that says why (the browser shows the page only that the request failed,
but the gateway's log and a developer's network tab show the reason).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import MatchInfoError

from docjobs.settings import SettingsError

from .errors import Handler, error_response

ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID")
EXPOSED_HEADERS = ("Content-Disposition", "ETag", "Location")
# How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours, Firefox at 24).
MAX_AGE_S = 600
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origins(raw: str, name: str = "DOCJOBS_CORS_ORIGINS") -> tuple[str, ...]:
    """The comma-separated origins, as a browser writes them in its Origin header: scheme, host and a
    port only when it is not the scheme's default, in lower case. Anything else names the bad entry."""
    origins: list[str] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        if entry == "*" or "*" in entry:
            raise SettingsError(f"{name}: list exact origins, not a wildcard ({entry!r})")
        try:
            parts = urlsplit(entry)
            port = parts.port
        except ValueError:
            raise SettingsError(f"{name}: {entry!r} is not an origin such as https://app.example.com") from None
        scheme = parts.scheme.lower()
        if (scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query
                or parts.fragment or parts.username is not None or parts.password is not None):
            raise SettingsError(f"{name}: {entry!r} is not an origin such as https://app.example.com "
                                "(scheme http or https, a host, an optional port, no path)")
        host = parts.hostname.lower()
        if ":" in host:  # an IPv6 address, bracketed in an origin
            host = f"[{host}]"
        origin = f"{scheme}://{host}" if port in (None, DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


class Cors:
    """Answers preflights and adds the CORS headers to every answer for the listed origins."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)

    def install(self, app: web.Application) -> None:
        """Outermost middleware (a preflight is answered before any handler or error mapping), and the
        signal every response passes through when it starts. With an empty list every preflight is
        refused (403) and no answer carries a CORS header."""
        app.middlewares.insert(0, self.preflight_middleware)
        if self.origins:
            app.on_response_prepare.append(self.on_response_prepare)

    @web.middleware
    async def preflight_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method != hdrs.METH_OPTIONS or hdrs.ORIGIN not in request.headers
                or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers):
            return await handler(request)
        origin = request.headers[hdrs.ORIGIN]
        if origin not in self.origins:
            return error_response(403, "cors_origin_not_allowed", f"the origin {origin!r} is not in "
                                  "DOCJOBS_CORS_ORIGINS: cross-origin requests from it are refused", "Origin")
        match_info = request.match_info
        if not isinstance(match_info, MatchInfoError):  # a route of its own answers OPTIONS: let it
            return await handler(request)
        error = match_info.http_exception
        if not isinstance(error, web.HTTPMethodNotAllowed):
            return error_response(error.status, "not_found", f"no such path: {request.path}")
        methods = sorted(error.allowed_methods)
        wanted = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].strip().upper()
        if wanted not in methods:
            return error_response(405, "method_not_allowed", f"{request.path} does not take {wanted}; it takes "
                                  f"{', '.join(methods)}", "Access-Control-Request-Method")
        # The preflight's own answer: the headers are added by on_response_prepare, as for any other.
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(methods),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(ALLOWED_HEADERS),
            hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_S)})

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        vary = response.headers.get(hdrs.VARY)
        if vary is None:
            response.headers[hdrs.VARY] = hdrs.ORIGIN
        elif "origin" not in {v.strip().lower() for v in vary.split(",")}:
            response.headers[hdrs.VARY] = f"{vary}, {hdrs.ORIGIN}"
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin not in self.origins:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(EXPOSED_HEADERS)
