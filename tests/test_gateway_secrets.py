"""The gateway's secrets: the per-job URL tokens stay out of its access log, and every token it accepts
expires, within DOCJOBS_JWT_MAX_TTL_S."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from docjobs.settings import SettingsError
from docjobs.urltokens import URL_TOKEN_AUDIENCE
from gateway.settings import Settings

from .conftest import wait_until
from .gateway_client import SECRET, bearer, start_gateway
from .processes import GatewayProcess
from .renderers import example


async def test_the_access_log_holds_no_url_token(jobstore, http, tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    gateway = GatewayProcess(jobstore.address, log).start()  # its own logging, as deployed
    try:
        async def ready() -> bool:
            try:
                async with http.get(gateway.base + "/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(ready, timeout=30, interval=0.05)  # (the jobstore answers on this loop)
        async with http.post(gateway.base + "/api/jobs", json=example("pdf"), headers=bearer("alice")) as r:
            created = await r.json()
        token = created["eventsUrl"].split("token=", 1)[1]
        async with http.delete(gateway.base + f"/api/jobs/{created['jobId']}", headers=bearer("alice")) as r:
            assert r.status == 200  # a finished job: its stream answers at once
        async with http.get(gateway.base + created["eventsUrl"] + "&lastEventId=0",
                            headers={"Referer": gateway.base + "/?token=" + token}) as r:
            assert r.status == 200
            await r.read()
        async with http.get(gateway.base + created["downloadUrl"]) as r:
            assert r.status == 404  # no document (yet): the token was accepted all the same
        await wait_until(lambda: log.read_text().count("token=REDACTED") >= 3, timeout=10)
    finally:
        gateway.stop()
    text = log.read_text()
    assert token not in text and token.split(".")[2] not in text
    events_line = next(line for line in text.splitlines() if f"/api/jobs/{created['jobId']}/events" in line)
    assert "token=REDACTED&lastEventId=0" in events_line and " 200 " in events_line, events_line
    assert f'"{gateway.base}/?token=REDACTED"' in events_line  # the Referer too


def _token(**claims: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


async def test_a_token_must_expire_within_the_maximum_lifetime(jobstore, http) -> None:
    gateway = await start_gateway(jobstore.address)  # DOCJOBS_JWT_MAX_TTL_S: 86400, the default
    now = int(time.time())
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"sub": "alice"}, 401, "it has no exp"),  # valid for ever: refused
        ({"sub": "alice", "iat": now, "exp": now + 86400}, 200, ""),
        ({"sub": "alice", "iat": now - 10, "exp": now + 86391}, 401, "expires 86401 s after its iat"),
        ({"sub": "alice", "iat": now - 3600, "exp": now + 600}, 200, ""),
        ({"sub": "alice", "exp": now + 86000}, 200, ""),  # no iat: measured from now
        ({"sub": "alice", "exp": now + 2 * 86400}, 401, "after now (it has no iat)"),
        ({"sub": "alice", "exp": str(now + 10**9)}, 401, "DOCJOBS_JWT_MAX_TTL_S"),
        # A backend's service token acting for its users is held to the same rule.
        ({"sub": "web-backend", "role": "service", "iat": now, "exp": now + 365 * 86400}, 401, "86400 s"),
        ({"sub": "web-backend", "role": "service", "iat": now, "exp": now + 3600}, 200, ""),
    ]
    try:
        for claims, status, words in cases:
            async with http.get(gateway.base + "/api/jobs", headers=_token(**claims)) as r:
                assert r.status == status, (claims, await r.text())
                if status == 401:
                    error = (await r.json())["error"]
                    assert error["code"] == "unauthenticated" and words in error["message"], (claims, error)
    finally:
        await gateway.stop()


async def test_the_maximum_lifetime_is_a_setting_and_holds_for_url_tokens(jobstore, http) -> None:
    gateway = await start_gateway(jobstore.address, jwt_max_ttl_s=300, url_token_ttl_s=120)
    now = int(time.time())
    try:
        async with http.get(gateway.base + "/api/jobs", headers=bearer("alice")) as r:
            assert r.status == 401  # the tests' usual tokens live 600 s
            assert "300 s" in (await r.json())["error"]["message"]
        async with http.post(gateway.base + "/api/jobs", json=example("pdf"),
                             headers=_token(sub="alice", iat=now, exp=now + 300)) as r:
            assert r.status == 202
            created = await r.json()
        async with http.delete(gateway.base + f"/api/jobs/{created['jobId']}",
                               headers=_token(sub="alice", iat=now, exp=now + 300)) as r:
            assert r.status == 200
        async with http.get(gateway.base + created["eventsUrl"]) as r:
            assert r.status == 200  # the gateway's own links live 120 s
            await r.read()
        forever = jwt.encode({"sub": "alice", "job": created["jobId"], "aud": URL_TOKEN_AUDIENCE, "iat": now,
                              "exp": now + 86400}, SECRET, algorithm="HS256")
        async with http.get(gateway.base + f"/api/jobs/{created['jobId']}/events?token={forever}") as r:
            assert r.status == 401
            assert "DOCJOBS_JWT_MAX_TTL_S" in (await r.json())["error"]["message"]
    finally:
        await gateway.stop()


def test_the_setting_is_read_and_checked_against_the_url_token_lifetime() -> None:
    env = {"DOCJOBS_JWT_SECRET": SECRET, "DOCJOBS_GRPC_TOKEN": "g" * 32}
    assert Settings.from_env(env).jwt_max_ttl_s == 86400
    assert Settings.from_env({**env, "DOCJOBS_JWT_MAX_TTL_S": "3600"}).jwt_max_ttl_s == 3600
    with pytest.raises(SettingsError, match="DOCJOBS_URL_TOKEN_TTL_S"):
        Settings.from_env({**env, "DOCJOBS_JWT_MAX_TTL_S": "600", "DOCJOBS_URL_TOKEN_TTL_S": "3600"})
    with pytest.raises(SettingsError, match="DOCJOBS_JWT_MAX_TTL_S"):
        Settings.from_env({**env, "DOCJOBS_JWT_MAX_TTL_S": "ten"})
