"""A signed stream URL that expires, in real Chromium from another origin: the gateway ends the session
stream when its URL token expires, EventSource's reconnection gets 401, and the client asks the page's
refreshUrl() for a fresh sessionEventsUrl (GET /api/events/url, with the user's bearer token) and resumes
after the last event, so a job created after the first token expired still reaches the page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import async_playwright

from .conftest import new_user, wait_until
from .gateway_client import bearer, token
from .renderers import example
from .test_browser_cross_origin import CrossOrigin, cross_origin
from .test_demo_page import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_PRESENT


@pytest.fixture
async def site(jobstore) -> AsyncIterator[CrossOrigin]:
    if not CHROMIUM_PRESENT:
        pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            async for running in cross_origin(jobstore, browser, url_token_ttl_s=3):  # heartbeats every 0.5 s
                yield running
        finally:
            await browser.close()


async def test_the_client_refreshes_an_expired_session_url_and_resumes(site) -> None:
    user = new_user()
    user_token = token(user)

    async def post() -> dict[str, str]:
        body = {**example("pdf"), "sessionId": "chat"}
        async with aiohttp.ClientSession() as http, http.post(site.gateway.base + "/api/jobs", json=body,
                                                              headers=bearer(user)) as r:
            assert r.status == 202
            return dict(await r.json())

    first = await post()
    page = await site.open()
    assert await page.evaluate("window.loaded") == "yes"
    await page.evaluate("""([gateway, sessionEventsUrl, token]) => {
        window.seen = []; window.errors = []; window.refreshed = 0;
        window.docjobs.watchSession({ gateway, sessionEventsUrl, refreshUrl: async () => {
            window.refreshed += 1;
            const headers = { Authorization: "Bearer " + token };
            const r = await fetch(gateway + "/api/events/url?sessionId=chat", { headers });
            return (await r.json()).sessionEventsUrl;
        } }, { onEvent: (e) => window.seen.push([Number(e.id), e.jobId]),
               onError: (e) => window.errors.push(e.status) });
    }""", [site.gateway.base, site.gateway.base + first["sessionEventsUrl"], user_token])
    await page.wait_for_function("window.seen.length >= 1")
    # The first token expires 3 s after the POST: the stream ends, EventSource's reconnection gets 401.
    await wait_until(lambda: page.evaluate("window.refreshed >= 1"), timeout=20, interval=0.2)
    later = await post()
    await page.wait_for_function(f"window.seen.some(([id, job]) => job === {later['jobId']!r})", timeout=20_000)
    seen = await page.evaluate("window.seen")
    ids = [event_id for event_id, _ in seen]
    assert ids == sorted(set(ids)), seen  # resumed after the last event: nothing twice, nothing lost
    assert {job for _, job in seen} == {first["jobId"], later["jobId"]}
    assert await page.evaluate("window.errors") == []
