"""The browser client from a page on ANOTHER origin, in real Chromium with web security on: a small
page server on its own port imports /client/docjobs.js from the gateway, submits, and shows the job in
a <docjobs-job>; the download link works. The same page served from an origin the gateway does not list
(localhost rather than 127.0.0.1) can neither load the client nor call the API. A stream refused with
429 (EventSource never retries it) is resumed by the client, with `lastEventId`, once a slot is free.
The seed's chat flow end to end (a backend's service token, the page's one session stream, an element
per job), and the session stream resumed across a gateway restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openpyxl
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from docjobs.pgserver import free_port

from .gateway_client import RunningGateway, bearer, start_gateway, token
from .renderers import RendererProcess, example
from .test_demo_page import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_PRESENT

# The page a frontend on its own origin would be: it loads the client from the gateway it is given.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chat app</title></head>
<body><div id="jobs"></div>
<script type="module">
const gateway = new URLSearchParams(location.search).get("gateway");
try {
  window.docjobs = await import(gateway + "/client/docjobs.js");
  window.loaded = "yes";
} catch (err) {
  window.loaded = "failed: " + err.message;
}
</script></body></html>
"""
DOWNLOAD = "docjobs-job [part=download]"


@dataclass
class CrossOrigin:
    gateway: RunningGateway
    page_port: int
    browser: Browser

    @property
    def listed_origin(self) -> str:
        return f"http://127.0.0.1:{self.page_port}"

    async def open(self, host: str = "127.0.0.1") -> Page:
        """The app's page, served from http://<host>:<page port>, with the client loaded (or not)."""
        page = await self.browser.new_page(accept_downloads=True)
        page.set_default_timeout(60_000)
        await page.goto(f"http://{host}:{self.page_port}/?gateway={self.gateway.base}")
        await page.wait_for_function("window.loaded !== undefined")
        return page


async def serve_page(port: int) -> web.AppRunner:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_PRESENT:
        pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
    async with async_playwright() as playwright:
        # Web security stays on (no --disable-web-security): CORS is what is being tested.
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        await launched.close()


async def cross_origin(jobstore, browser: Browser, **gateway_options: Any) -> AsyncIterator[CrossOrigin]:
    page_port = free_port()
    gateway = await start_gateway(jobstore.address, cors_origins=(f"http://127.0.0.1:{page_port}",),
                                  **gateway_options)
    pages = await serve_page(page_port)
    try:
        yield CrossOrigin(gateway, page_port, browser)
    finally:
        await pages.cleanup()
        await gateway.stop()


@pytest.fixture
async def site(jobstore, browser) -> AsyncIterator[CrossOrigin]:
    async for running in cross_origin(jobstore, browser):
        yield running


async def submit_from_page(page: Page, gateway: str, body: dict[str, Any], user_token: str) -> dict[str, Any]:
    answer: dict[str, Any] = await page.evaluate(
        "([gateway, body, token]) => window.docjobs.submit(body, {gateway, token})", [gateway, body, user_token])
    return answer


async def show_job(page: Page, gateway: str, job_id: str, events_url: str | None = None,
                   user_token: str | None = None) -> None:
    """A <docjobs-job> on the page: following events-url, or job-id with a bearer token."""
    await page.evaluate("""([gateway, jobId, eventsUrl, token]) => {
        const element = document.createElement("docjobs-job");
        element.setAttribute("gateway", gateway);
        element.setAttribute("job-id", jobId);
        if (eventsUrl) element.setAttribute("events-url", eventsUrl);
        if (token) element.token = token;
        document.getElementById("jobs").append(element);
    }""", [gateway, job_id, events_url, user_token])


async def assert_download_works(page: Page, tmp_path, sheetnames: list[str]) -> None:
    async with page.expect_download() as info:
        await page.click(DOWNLOAD)
    download = await info.value
    target = tmp_path / download.suggested_filename
    await download.save_as(target)
    assert openpyxl.load_workbook(target).sheetnames == sheetnames


async def test_a_listed_origin_submits_follows_and_downloads(site, renderer, tmp_path) -> None:
    page = await site.open()
    assert await page.evaluate("window.loaded") == "yes"
    user_token = token("browser-user")
    created = await submit_from_page(page, site.gateway.base, example("spreadsheet"), user_token)
    # The URLs the gateway hands out are relative to it; the client made them absolute.
    assert created["eventsUrl"].startswith(site.gateway.base + f"/api/jobs/{created['jobId']}/events?token=")
    await show_job(page, site.gateway.base, created["jobId"], events_url=created["eventsUrl"])
    await page.wait_for_selector(f"{DOWNLOAD}:not([hidden])")
    assert await page.text_content("docjobs-job [part=status]") == "completed"
    assert "Sheet: Summary" in await page.inner_text("docjobs-job [part=preview]")
    href = await page.get_attribute(DOWNLOAD, "href")
    assert href is not None and href.startswith(site.gateway.base + f"/api/jobs/{created['jobId']}/artifact?token=")
    # The headers a client reads are exposed to the page (Content-Disposition names the file).
    exposed = await page.evaluate("""async (url) => {
        const r = await fetch(url);
        await r.arrayBuffer();
        return [r.status, r.headers.get("Content-Disposition"), r.headers.get("ETag")];
    }""", href)
    assert exposed[0] == 200 and exposed[1].startswith("attachment;") and exposed[2].startswith('"')
    await assert_download_works(page, tmp_path, ["Summary", "Orders"])
    await page.screenshot(path=str(tmp_path / "cross-origin.png"), full_page=True)

    # The same job followed with the user's bearer token instead of a signed URL: a GET with Authorization,
    # preflighted, read with fetch (EventSource sends no headers).
    await page.evaluate("document.getElementById('jobs').replaceChildren()")
    await show_job(page, site.gateway.base, created["jobId"], user_token=user_token)
    await page.wait_for_selector(f"{DOWNLOAD}:not([hidden])")
    assert "Sheet: Summary" in await page.inner_text("docjobs-job [part=preview]")


async def test_an_unlisted_origin_is_blocked_by_the_browser(site, http_session) -> None:
    page = await site.open(host="localhost")  # another origin: http://localhost:<port>, not listed
    assert (await page.evaluate("window.loaded")).startswith("failed:")  # the module import is refused
    user_token = token("blocked-user")
    outcome = await page.evaluate("""async ([gateway, token]) => {
        try {
            await fetch(gateway + "/api/jobs", {method: "POST", body: '{"documentType": "pdf"}',
                headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token}});
            return "answered";
        } catch (err) { return err.name; }
    }""", [site.gateway.base, user_token])
    assert outcome == "TypeError"  # the preflight was refused: the POST never left the browser
    read = await page.evaluate("""async (gateway) => {
        try { await fetch(gateway + "/api/examples/pdf"); return "read"; } catch (err) { return err.name; }
    }""", site.gateway.base)
    assert read == "TypeError"  # a simple GET is sent, but its answer is kept from the page
    async with http_session.get(site.gateway.base + "/api/jobs", headers=bearer("blocked-user")) as r:
        assert (await r.json())["jobs"] == []


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def one_stream_site(jobstore, browser) -> AsyncIterator[CrossOrigin]:
    async for running in cross_origin(jobstore, browser, sse_streams_per_user=1):
        yield running


async def test_a_stream_refused_with_429_is_resumed_by_the_client(one_stream_site, jobstore, http_session,
                                                                  tmp_path) -> None:
    site = one_stream_site
    page = await site.open()
    user_token = token("busy-user")
    # No renderer yet: the jobs stay pending, so a stream opened on one stays open.
    held_job = await submit_from_page(page, site.gateway.base, {**example("pdf"), "title": "Held"}, user_token)
    created = await submit_from_page(page, site.gateway.base, example("spreadsheet"), user_token)
    # Another tab of the same user holds the user's one stream.
    held = await http_session.get(held_job["eventsUrl"])
    assert held.status == 200
    await page.evaluate("""(events) => {
        window.refusals = [];
        window.watched = window.docjobs.watchJob({eventsUrl: events}, {
            onError: (err) => window.refusals.push([err.status, err.code, err.retryable]),
            onEvent: (e) => { if (e.type === "job-complete") window.completed = e.data.result.filename; },
        });
    }""", created["eventsUrl"])
    await page.wait_for_function("window.refusals.length > 0")
    assert await page.evaluate("window.refusals[0]") == [429, "too_many_streams", True]
    held.close()  # the other tab goes: the client's next attempt, after its backoff, gets the slot
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    try:
        await page.wait_for_function("window.completed !== undefined")
    finally:
        await renderer.shutdown()
    assert (await page.evaluate("window.completed")).endswith(".xlsx")
    assert await page.evaluate("window.watched.closed")  # a job's watch ends at its terminal event


# The seed's chat flow, end to end. The code is the seed's mode: LLM-written Python run in the sandbox.
SEED_CODE = """
from openpyxl import Workbook
wb = Workbook()
ws = wb.active
ws.title = "Sales"
ws.append(["Region", "Amount"])
ws.append(["North", 120])
ws.append(["South", 95])
wb.save(output_path)
"""
CODE_RENDERER = {"DOCJOBS_CODE_EXECUTION": "sandbox", "DOCJOBS_SANDBOX_TIMEOUT_S": "20"}


async def test_the_seeds_chat_flow_from_a_backend_and_a_page_on_another_origin(site, jobstore, http_session,
                                                                              tmp_path) -> None:
    """A backend's service token POSTs the seed's request for user 123; the chat page, on its own origin
    and holding user 123's token, follows the session over one stream through /client/docjobs.js, and a
    <docjobs-job> per job shows the preview and a download link that works."""
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer", **CODE_RENDERER).start()
    try:
        session_id = str(uuid.uuid4())
        page = await site.open()
        assert await page.evaluate("window.loaded") == "yes"
        await page.evaluate("""([gateway, token, sessionId]) => {
            window.errors = [];
            window.session = window.docjobs.watchSession({gateway, token, sessionId}, {
                onJob(jobId) {
                    const element = document.createElement("docjobs-job");
                    element.setAttribute("gateway", gateway);
                    element.setAttribute("job-id", jobId);
                    element.session = window.session;
                    document.getElementById("jobs").append(element);
                },
                onError: (err) => window.errors.push(err.message),
            });
        }""", [site.gateway.base, token("123"), session_id])
        service = token("chat-backend", scope="docjobs:service")
        seed = {"code": SEED_CODE, "documentType": "spreadsheet", "title": "Sales Report", "sessionId": session_id,
                "userId": 123, "priority": 0}
        async with http_session.post(site.gateway.base + "/api/jobs", json=seed,
                                     headers={"Authorization": f"Bearer {service}"}) as r:
            assert r.status == 202, await r.text()
            created = await r.json()
        await page.wait_for_selector(f"{DOWNLOAD}:not([hidden])", timeout=90_000)
        assert await page.get_attribute("docjobs-job", "job-id") == created["jobId"]
        assert await page.text_content("docjobs-job [part=status]") == "completed"
        assert "Sheet: Sales" in await page.inner_text("docjobs-job [part=preview]")
        assert "North" in await page.inner_text("docjobs-job [part=preview]")
        await page.screenshot(path=str(tmp_path / "seed-chat.png"), full_page=True)
        await assert_download_works(page, tmp_path, ["Sales"])
        assert await page.evaluate("window.session.jobs()") == [created["jobId"]]
        assert await page.evaluate("window.errors") == []
        # The backend may hand its answer's sessionEventsUrl to the page instead (read with EventSource).
        # Its URLs are relative to the gateway.
        replayed = await page.evaluate("""([gateway, url]) => new Promise((resolve) => {
            const watch = window.docjobs.watchSession({gateway, sessionEventsUrl: url}, {
                onEvent(e) {
                    if (e.type === "job-complete") { watch.close(); resolve([e.jobId, e.data.result.filename]); }
                },
                onError: (err) => resolve(["error", err.status, err.message]),
            });
        })""", [site.gateway.base, created["sessionEventsUrl"]])
        assert replayed == [created["jobId"], "Sales-Report.xlsx"]
    finally:
        await renderer.shutdown()


async def test_the_session_watch_resumes_across_a_gateway_restart(jobstore, browser, renderer,
                                                                  http_session) -> None:
    """The page's one session stream (bearer token, read with fetch) outlives its gateway: the client
    reconnects to the new process after the last id it got, and sees the next job, every event once."""
    page_port, gateway_port = free_port(), free_port()
    options = {"cors_origins": (f"http://127.0.0.1:{page_port}",), "http_port": gateway_port}
    gateway = await start_gateway(jobstore.address, **options)
    pages = await serve_page(page_port)
    try:
        site = CrossOrigin(gateway, page_port, browser)
        page = await site.open()
        session_id = str(uuid.uuid4())
        await page.evaluate("""([gateway, token, sessionId]) => {
            window.events = [];
            window.session = window.docjobs.watchSession({gateway, token, sessionId}, {
                onEvent: (e) => window.events.push([e.type, e.id, e.jobId]),
            });
        }""", [gateway.base, token("restart-user"), session_id])
        service = {"Authorization": f"Bearer {token('chat-backend', scope='docjobs:service')}"}
        body = {**example("pdf"), "sessionId": session_id, "userId": "restart-user"}
        async with http_session.post(gateway.base + "/api/jobs", json=body, headers=service) as r:
            first = (await r.json())["jobId"]
        await page.wait_for_function(f"window.events.some(e => e[0] === 'job-complete' && e[2] === '{first}')")
        await gateway.stop()
        gateway = await start_gateway(jobstore.address, **options)
        async with http_session.post(gateway.base + "/api/jobs", json=body, headers=service) as r:
            second = (await r.json())["jobId"]
        await page.wait_for_function(f"window.events.some(e => e[0] === 'job-complete' && e[2] === '{second}')")
        events = await page.evaluate("window.events")
        ids = [int(e[1]) for e in events]
        assert ids == sorted(set(ids)), "every event once, in order"
        assert [e[0] for e in events if e[2] == first][-1] == [e[0] for e in events if e[2] == second][-1] == \
            "job-complete"
        assert await page.evaluate("window.session.jobs()") == [first, second]
    finally:
        await pages.cleanup()
        await gateway.stop()
