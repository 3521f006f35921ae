"""Who is calling: a user or a service.

A user: a bearer JWT (HS256, `sub` is the user id), or, on the URLs handed out (a job's events and
download, a session's events), a short-lived token signed for that job or session and user, since
EventSource and a plain link cannot send headers. A service (a backend acting for its users): a bearer
JWT whose `scope` claim, a space-separated string as in OAuth 2, holds `docjobs:service`, signed with
DOCJOBS_SERVICE_JWT_SECRET when that is set, else with DOCJOBS_JWT_SECRET. When the two secrets differ, a
token signed with the service secret must carry the scope, and one signed with the users' secret must not
(401 either way): a leaked user-signing secret then cannot mint a service. A token without the scope is a
user's, whatever else it holds. DOCJOBS_AUTH=none (the local demo) makes everyone the user "local".

Every token must expire, within DOCJOBS_JWT_MAX_TTL_S of its issue (`iat`), or of now when it has no
`iat`: a token that never expires, once leaked, opens its user's jobs for ever.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from docjobs import urltokens
from docjobs.jobrequest import valid_user_id
from docjobs.urltokens import NO_AUTH_SECRET, URL_TOKEN_AUDIENCE

from .errors import ApiError
from .settings import Settings

SESSION_URL_AUDIENCE = "docjobs:session-url"
SERVICE_SCOPE = "docjobs:service"
LOCAL_USER = "local"
# A token without `iat` is measured from now: the clocks of the server that minted it and of the
# gateway may differ by this much.
CLOCK_SKEW_S = 30


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls. A user sees its own jobs; a service (`service`, with `user_id` empty) sees every user's.
    `expires`: when the credential it called with expires (the token's `exp`, seconds since the epoch;
    None without one, in no-auth mode). A stream ends then: a credential is checked when a stream opens,
    and an open stream must not outlive it."""

    user_id: str
    service: bool = False
    expires: int | None = None

    @property
    def owner(self) -> str:
        """The user_id of the jobstore's GetJob, Cancel, Watch and DownloadArtifact: empty means any user."""
        return "" if self.service else self.user_id


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth
        # No-auth mode: everyone is "local", so the URL tokens protect nothing; a fixed secret keeps the
        # URLs handed out valid across gateway restarts (EventSource reconnects with the same URL).
        self._secret = settings.jwt_secret or NO_AUTH_SECRET
        self._service_secret = settings.service_jwt_secret  # "": services sign with the users' secret
        self._ttl = settings.url_token_ttl_s
        self._max_ttl = settings.jwt_max_ttl_s

    def caller(self, request: web.Request) -> Caller:
        """The caller from its Authorization header (the user "local" in no-auth mode); 401 otherwise."""
        if self.mode == "none":
            return Caller(LOCAL_USER)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>")
        service_signed = False
        if self._service_secret:
            try:
                claims = self._decode(token, "invalid token", secret=self._service_secret)
                service_signed = True
            except ApiError as exc:
                if not isinstance(exc.__cause__, jwt.InvalidSignatureError):
                    raise
                claims = self._decode(token, "invalid token")
        else:
            claims = self._decode(token, "invalid token")
        scope = claims.get("scope")
        # Only a string is an OAuth 2 scope; another shape (some identity providers send a list) is not
        # read, and such a token is a user's.
        is_service = isinstance(scope, str) and SERVICE_SCOPE in scope.split(" ")
        if self._service_secret and service_signed != is_service:
            if service_signed:
                raise ApiError(401, "unauthenticated", f"a token signed with the service secret must have "
                               f"{SERVICE_SCOPE!r} in its scope")
            raise ApiError(401, "unauthenticated", f"a token with scope {SERVICE_SCOPE!r} must be signed with "
                           "the service secret (DOCJOBS_SERVICE_JWT_SECRET)")
        expires = int(claims["exp"])
        if is_service:
            return Caller("", service=True, expires=expires)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_user_id(sub):
            raise ApiError(401, "unauthenticated", "the token's sub must be the user id")
        return Caller(sub, expires=expires)

    def caller_for_job_url(self, request: web.Request, job_id: str) -> Caller:
        """For events and download: a URL token for this job, else the usual header."""
        token = request.query.get("token")
        if not token:
            return self.caller(request)
        claims = self._decode(token, "invalid or expired link token", audience=URL_TOKEN_AUDIENCE,
                              require=["job"])
        if claims.get("job") != job_id:
            raise ApiError(401, "unauthenticated", "this link token is for another job")
        return Caller(_url_token_user(claims), expires=int(claims["exp"]))

    def caller_for_session_url(self, request: web.Request, session_id: str) -> Caller:
        """For a session's events: a session URL token (for this session, or for all the user's jobs),
        else the usual header."""
        token = request.query.get("token")
        if not token:
            return self.caller(request)
        claims = self._decode(token, "invalid or expired link token", audience=SESSION_URL_AUDIENCE)
        scoped = claims.get("session")
        if scoped is not None and scoped != session_id:
            raise ApiError(401, "unauthenticated", "this link token is for another session", "sessionId")
        return Caller(_url_token_user(claims), expires=int(claims["exp"]))

    def _decode(self, token: str, what: str, *, audience: str | None = None, require: Sequence[str] = (),
                secret: str | None = None) -> dict[str, Any]:
        """The claims of a token signed with our secret (or `secret`) that expires within
        DOCJOBS_JWT_MAX_TTL_S; 401 otherwise, caused by PyJWT's error. `what` starts the message. A URL
        token (one with an audience) must name its user (`sub`)."""
        # A JWT is ASCII: anything else (a header sent as Latin-1 arrives as surrogates) is not one, and
        # must not reach the decoder, whose errors for it are not PyJWT's.
        if not token.isascii():
            raise ApiError(401, "unauthenticated", f"{what}: not a JWT (it is not ASCII)")
        if audience is not None:
            require = ("sub", *require)
        try:
            claims: dict[str, Any] = jwt.decode(token, secret or self._secret, algorithms=["HS256"],
                                                audience=audience, options={"require": ["exp", *require]})
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim != "exp":
                raise ApiError(401, "unauthenticated", f"{what}: {exc}") from None
            raise ApiError(401, "unauthenticated", f"{what}: it has no exp; a token must expire within "
                           f"{self._max_ttl} s (DOCJOBS_JWT_MAX_TTL_S)") from None
        except jwt.PyJWTError as exc:
            raise ApiError(401, "unauthenticated", f"{what}: {exc}") from exc
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
        return urltokens.job_url_token(self._secret, self._ttl, user_id, job_id)

    def session_url_token(self, user_id: str, session_id: str) -> str:
        """A token for the events of one session of the user ("": all of the user's jobs)."""
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "aud": SESSION_URL_AUDIENCE, "iat": now, "exp": now + self._ttl}
        if session_id:
            claims["session"] = session_id
        return jwt.encode(claims, self._secret, algorithm="HS256")


def _url_token_user(claims: dict[str, Any]) -> str:
    """A URL token's user, checked as a bearer token's is: a sub that is no user id (a lone surrogate, a
    NUL: whoever holds the signing secret may write one, and in no-auth mode that secret is public) was
    passed on as it was, and failed as a 500 where it could not be encoded."""
    sub = claims["sub"]
    if not isinstance(sub, str) or not valid_user_id(sub):
        raise ApiError(401, "unauthenticated", "the link token's sub must be the user id")
    return sub
