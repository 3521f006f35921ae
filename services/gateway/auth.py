"""Who is calling: a bearer JWT (HS256, `sub` is the user id), or, on the URLs handed out for one job
(events, download), a short-lived token signed for that job and user, since EventSource and a plain
link cannot send headers. DOCJOBS_AUTH=none (the local demo) makes everyone the user "local"."""

from __future__ import annotations

import time

import jwt
from aiohttp import web

from .errors import ApiError
from .settings import Settings

URL_TOKEN_AUDIENCE = "docjobs:job-url"
LOCAL_USER = "local"
NO_AUTH_SECRET = "docjobs-no-auth-demo-mode-url-tokens"


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth
        # No-auth mode: everyone is "local", so the URL tokens protect nothing; a fixed secret keeps the
        # URLs handed out valid across gateway restarts (EventSource reconnects with the same URL).
        self._secret = settings.jwt_secret or NO_AUTH_SECRET
        self._ttl = settings.url_token_ttl_s

    def user(self, request: web.Request) -> str:
        """The caller from its Authorization header (or "local" in no-auth mode); 401 otherwise."""
        if self.mode == "none":
            return LOCAL_USER
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["sub"]})
        except jwt.PyJWTError as exc:
            raise ApiError(401, "unauthenticated", f"invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 200:
            raise ApiError(401, "unauthenticated", "the token's sub must be the user id")
        return sub

    def user_for_job_url(self, request: web.Request, job_id: str) -> str:
        """For events and download: a URL token for this job, else the usual header."""
        token = request.query.get("token")
        if not token:
            return self.user(request)
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=URL_TOKEN_AUDIENCE,
                                options={"require": ["sub", "job", "exp"]})
        except jwt.PyJWTError as exc:
            raise ApiError(401, "unauthenticated", f"invalid or expired link token: {exc}") from None
        if claims.get("job") != job_id:
            raise ApiError(401, "unauthenticated", "this link token is for another job")
        return str(claims["sub"])

    def job_url_token(self, user_id: str, job_id: str) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user_id, "job": job_id, "aud": URL_TOKEN_AUDIENCE, "iat": now,
                           "exp": now + self._ttl}, self._secret, algorithm="HS256")
