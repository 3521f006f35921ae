"""The signed URL tokens of a job's links (its events and its download): minted by the gateway for the
URLs it hands out, and by the jobstore's pg-boss bridge for the downloadUrl of a pg-boss job's output.
Both must sign alike for the gateway to take what either minted; the gateway alone checks them."""

from __future__ import annotations

import time

import jwt

URL_TOKEN_AUDIENCE = "docjobs:job-url"
# DOCJOBS_AUTH=none (the local demo): everyone is the user "local", so the tokens protect nothing; a fixed
# secret keeps the URLs handed out valid across restarts (EventSource reconnects with the same URL).
NO_AUTH_SECRET = "docjobs-no-auth-demo-mode-url-tokens"


def job_url_token(secret: str, ttl_s: int, user_id: str, job_id: str, now: int | None = None) -> str:
    """A token for one job of one user, valid for ttl_s seconds (DOCJOBS_URL_TOKEN_TTL_S)."""
    issued = int(time.time()) if now is None else now
    return jwt.encode({"sub": user_id, "job": job_id, "aud": URL_TOKEN_AUDIENCE, "iat": issued,
                       "exp": issued + ttl_s}, secret, algorithm="HS256")


def artifact_path(job_id: str, token: str) -> str:
    """A job's download link, carrying its URL token (a plain link cannot send a header)."""
    return f"/api/jobs/{job_id}/artifact?token={token}"
