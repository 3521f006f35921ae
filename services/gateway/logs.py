"""What the gateway's HTTP server writes to its log about requests.

The access log leaves out the per-job URL tokens (`?token=` on the events and download URLs): each
opens a job's events and its document for DOCJOBS_URL_TOKEN_TTL_S, and logs are read by more people,
and kept longer, than the tokens are meant for.

aiohttp logs a request it cannot parse (a header line too long, a body that does not decompress) with
a traceback; anyone can send such requests, so here each costs one line.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

URL_TOKEN_PARAMETER = "token"
REDACTED = "REDACTED"


def redact(url: URL) -> str:
    """The URL as it may be logged: the value of its token parameter replaced."""
    if URL_TOKEN_PARAMETER not in url.query:
        return str(url)
    return str(url.with_query([(k, REDACTED if k == URL_TOKEN_PARAMETER else v) for k, v in url.query.items()]))


class AccessLog(AbstractAccessLogger):
    """aiohttp's access log line (its default format: remote, time, request line, status, size, referer,
    user agent), with the URL tokens redacted in the request line and the referer."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            started = datetime.now(UTC) - timedelta(seconds=time)
            referer = request.headers.get("Referer")
            self.logger.info(
                '%s [%s] "%s %s HTTP/%d.%d" %d %d "%s" "%s"', request.remote or "-",
                started.strftime("%d/%b/%Y:%H:%M:%S %z"), request.method, redact(request.rel_url),
                request.version.major, request.version.minor, response.status, response.body_length,
                redact(URL(referer)) if referer else "-", request.headers.get("User-Agent", "-"))
        except Exception:  # a log line must never fail a request
            self.logger.exception("error in the access log")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, where a request that aiohttp cannot parse is one line, not a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"))

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info
        if isinstance(error, web.RequestPayloadError) and isinstance(error.__cause__, HttpProcessingError):
            error = error.__cause__
        if isinstance(error, HttpProcessingError):  # the client's mistake, not the server's
            self.info(f"{msg}: malformed request (%s)", *args, error.message, **kwargs)
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)
