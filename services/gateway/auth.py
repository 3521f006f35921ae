"""Who is calling: a bearer JWT (HS256, `sub` is the user id), or, on the URLs handed out for one job
(events, download), a short-lived token signed for that job and user, since EventSource and a plain
link cannot send headers. DOCJOBS_AUTH=none (the local demo) makes everyone the user "local".

Every token must expire, within DOCJOBS_JWT_MAX_TTL_S of its issue (`iat`), or of now when it has no
`iat`: a token that never expires, once leaked, opens its user's jobs for ever.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jwt
from aiohttp import web

from docjobs import jsonvalues

from .errors import ApiError
from .settings import Settings

URL_TOKEN_AUDIENCE = "docjobs:job-url"
LOCAL_USER = "local"
NO_AUTH_SECRET = "docjobs-no-auth-demo-mode-url-tokens"
# A token without `iat` is measured from now: the clocks of the server that minted it and of the
# gateway may differ by this much.
CLOCK_SKEW_S = 30


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth
        # No-auth mode: everyone is "local", so the URL tokens protect nothing; a fixed secret keeps the
        # URLs handed out valid across gateway restarts (EventSource reconnects with the same URL).
        self._secret = settings.jwt_secret or NO_AUTH_SECRET
        self._ttl = settings.url_token_ttl_s
        self._max_ttl = settings.jwt_max_ttl_s

    def user(self, request: web.Request) -> str:
        """The caller from its Authorization header (or "local" in no-auth mode); 401 otherwise."""
        if self.mode == "none":
            return LOCAL_USER
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>")
        claims = self._decode(token, "invalid token")
        sub = claims.get("sub")
        # It goes to the jobstore as the user id: a protobuf string (no lone surrogate), without control characters.
        if (not isinstance(sub, str) or not sub or len(sub) > 200 or any(ord(c) < 32 for c in sub)
                or jsonvalues.text_problem(sub)):
            raise ApiError(401, "unauthenticated", "the token's sub must be the user id")
        return sub

    def user_for_job_url(self, request: web.Request, job_id: str) -> str:
        """For events and download: a URL token for this job, else the usual header."""
        token = request.query.get("token")
        if not token:
            return self.user(request)
        claims = self._decode(token, "invalid or expired link token", audience=URL_TOKEN_AUDIENCE,
                              require=["job"])
        if claims.get("job") != job_id:
            raise ApiError(401, "unauthenticated", "this link token is for another job")
        return str(claims["sub"])

    def _decode(self, token: str, what: str, *, audience: str | None = None,
                require: Sequence[str] = ()) -> dict[str, Any]:
        """The claims of a token signed with our secret that expires within DOCJOBS_JWT_MAX_TTL_S; 401
        otherwise. `what` starts the message."""
        # A JWT is ASCII: anything else (a header sent as Latin-1 arrives as surrogates) is not one, and
        # must not reach the decoder, whose errors for it are not PyJWT's.
        if not token.isascii():
            raise ApiError(401, "unauthenticated", f"{what}: not a JWT (it is not ASCII)")
        try:
            claims: dict[str, Any] = jwt.decode(token, self._secret, algorithms=["HS256"], audience=audience,
                                                options={"require": ["sub", "exp", *require]})
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim != "exp":
                raise ApiError(401, "unauthenticated", f"{what}: {exc}") from None
            raise ApiError(401, "unauthenticated", f"{what}: it has no exp; a token must expire within "
                           f"{self._max_ttl} s (DOCJOBS_JWT_MAX_TTL_S)") from None
        except jwt.PyJWTError as exc:
            raise ApiError(401, "unauthenticated", f"{what}: {exc}") from None
        # PyJWT has checked that exp (and iat, if there) are integers, or strings of one.
        exp = int(claims["exp"])
        if "iat" in claims:
            lifetime, since, allowed = exp - int(claims["iat"]), "its iat", self._max_ttl
        else:
            lifetime, since, allowed = exp - int(time.time()), "now (it has no iat)", self._max_ttl + CLOCK_SKEW_S
        if lifetime > allowed:
            raise ApiError(401, "unauthenticated", f"{what}: it expires {lifetime} s after {since}, later than "
                           f"the {self._max_ttl} s this gateway accepts (DOCJOBS_JWT_MAX_TTL_S)")
        return claims

    def job_url_token(self, user_id: str, job_id: str) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user_id, "job": job_id, "aud": URL_TOKEN_AUDIENCE, "iat": now,
                           "exp": now + self._ttl}, self._secret, algorithm="HS256")
